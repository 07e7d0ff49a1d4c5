"""The server's settings (one dataclass; the CLI flags map onto it)."""

from __future__ import annotations

from dataclasses import dataclass

from gptkit.core.errors import GptkitError


@dataclass
class ServeSettings:
    """How ``gptkit serve`` listens, batches and limits requests.

    ``max_seq_len``: prompt + generated tokens per sequence (default: the
    model's context length); the key/value cache holds ``max_batch_size`` such
    sequences. ``request_timeout``: seconds a request may take, waiting
    included (``None``: no limit). ``drain_timeout``: how long SIGTERM waits
    for in-flight requests before cancelling them.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None
    max_batch_size: int = 16
    max_queue: int = 64
    max_seq_len: int | None = None
    prefill_chunk: int = 256
    request_timeout: float | None = 600.0
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    log_json: bool = False
    drain_timeout: float = 30.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        positive = ("max_batch_size", "prefill_chunk", "max_body_bytes", "retry_after")
        for name in positive:
            if getattr(self, name) < 1:
                raise GptkitError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise GptkitError(f"max_queue must be >= 0, got {self.max_queue}")
        if not 0 <= self.port <= 65535:
            raise GptkitError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise GptkitError("max_seq_len must be >= 2")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise GptkitError("request_timeout must be > 0")
        if self.drain_timeout < 0:
            raise GptkitError("drain_timeout must be >= 0")
        if self.api_key is not None and not self.api_key:
            raise GptkitError("the API key is empty")
