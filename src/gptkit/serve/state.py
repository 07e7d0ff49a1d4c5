"""What every request handler shares: the engine, the settings, the tokenizer,
the metrics, and whether the server is draining."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gptkit.serve.engine.batching import BatchingEngine
from gptkit.serve.errors import APIError, unavailable
from gptkit.serve.metrics import Metrics
from gptkit.serve.settings import ServeSettings


@dataclass
class ServeState:
    """What the handlers need: the engine, the settings, the tokenizer."""

    engine: BatchingEngine
    settings: ServeSettings
    model_name: str
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=lambda: int(time.time()))
    draining: bool = False

    def __post_init__(self) -> None:
        from gptkit.core.tokenizer import EOT_ID, decode, encode, get_tokenizer

        self.encode = encode
        self.decode = decode
        self.token_bytes = get_tokenizer().decode_single_token_bytes
        self.eos_id = EOT_ID
        self.vocab_size = self.engine.vocab_limit
        self.max_seq_len = self.engine.max_seq_len
        self.fingerprint = f"gptkit-{self.model_name}"
        engine = self.engine
        self.metrics.watch_engine(
            lambda: engine.queued, lambda: engine.running, lambda: engine.steps
        )

    def check_open(self) -> None:
        """503 while shutting down or when the engine has stopped."""
        if self.draining:
            raise unavailable("the server is shutting down", 5)
        if not self.engine.alive:
            raise APIError(
                503, "the generation engine is not running", type="server_error"
            )
