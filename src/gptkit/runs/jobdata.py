"""What a job's data brings to a run (``train``: a corpus; ``finetune``:
instruction records), so that one composition builds both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunData:
    """What a job's data brings to a run: the loaders and what config.json
    records of them, the per-epoch sample's prompt, and the job's extras."""

    splits: Any  # core.data.DataSplits
    config: dict[str, Any]  # config.json's "data"
    start_context: str
    order: str | None  # the data order used (None: a prepared corpus)
    reseed: bool = False  # seed again after building the model (chapter 7)
    run_config: dict[str, Any] = field(default_factory=dict)  # more of config.json
    checkpoint_info: dict[str, Any] = field(default_factory=dict)
    #: Called with (trainer, summary) after training completes.
    after_fit: Any = None
    #: Called with the model once built (adapters).
    adapt: Any = None
