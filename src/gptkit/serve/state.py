"""What every request handler shares: the engine, the settings, the tokenizer,
the metrics, the operator's drafts, the limits on one request, and whether the
server is draining."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gptkit.serve.engine.batching import BatchingEngine
from gptkit.serve.errors import APIError, unavailable
from gptkit.serve.metrics import Metrics
from gptkit.serve.schemas import (
    MAX_LOGIT_BIAS,
    MAX_LOGPROBS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    Limits,
)
from gptkit.serve.settings import ServeSettings


@dataclass
class ServeState:
    """What the handlers need: the engine, the settings, the tokenizer."""

    engine: BatchingEngine
    settings: ServeSettings
    model_name: str
    drafts: dict[str, Any] = field(default_factory=dict)  # name -> GPTModel
    auth: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=lambda: int(time.time()))
    draining: bool = False
    openapi: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        tokenizer = self.engine.tokenizer
        self.tokenizer = tokenizer
        self.encode = tokenizer.encode
        self.decode = tokenizer.decode
        self.token_bytes = tokenizer.token_bytes
        self.eos_id = tokenizer.eos_id
        self.vocab_size = self.engine.vocab_limit
        self.max_seq_len = self.engine.max_seq_len
        self.fingerprint = f"gptkit-{self.model_name}"
        settings = self.settings
        self.limits = Limits(
            max_prompts=settings.max_queue,
            max_n=self.engine.max_batch_size,
            max_beams=self.engine.max_batch_size,
            max_request_tokens=settings.max_request_tokens
            or self.engine.max_batch_size * self.max_seq_len,
            max_logprobs=MAX_LOGPROBS,
            max_stop_strings=MAX_STOP_STRINGS,
            max_stop_chars=MAX_STOP_CHARS,
            max_logit_bias=MAX_LOGIT_BIAS,
            max_body_bytes=settings.max_body_bytes,
            request_timeout_s=settings.request_timeout,
            drafts=sorted(self.drafts),
        )
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
