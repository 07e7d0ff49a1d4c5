"""Run the app under uvicorn: bind, announce, drain on SIGTERM.

SIGTERM (or Ctrl-C) stops accepting connections, answers 503 to new requests
on open connections, lets in-flight requests finish for up to
``drain_timeout`` seconds, cancels what is left, stops the engine and returns
(exit code 0 for SIGTERM, 130 for Ctrl-C). uvicorn itself would re-raise the
signal after its graceful shutdown, so the process would die of it (exit
143); gptkit's server keeps uvicorn's shutdown and drops that last step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import uvicorn

from gptkit.errors import GptkitError
from gptkit.serve.settings import ServeSettings

if TYPE_CHECKING:
    from gptkit.core.model import GPTModel

log = logging.getLogger("gptkit.serve")


class _DrainingServer(uvicorn.Server):
    """uvicorn's server with gptkit's signal handling (see the module docs)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_signal = on_signal
        self.signals: list[int] = []

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_exit(self, sig: int, frame: object) -> None:
        self.signals.append(sig)
        if not self.should_exit:
            log.info("gptkit serve: %s, draining", signal.Signals(sig).name)
        self.on_signal()
        self.handle_exit(sig, None)  # type: ignore[arg-type]


class JsonLines(logging.Formatter):
    """One JSON object per record: a request's fields, or time, level,
    logger, message and the exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        row = getattr(record, "row", None)
        if row is None:
            row = {
                "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                    timespec="milliseconds"
                ),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                row["exception"] = self.formatException(record.exc_info)
        return json.dumps(row, separators=(",", ":"))


def configure_logging(json_lines: bool) -> None:
    """Request lines (``gptkit.serve``) and engine errors (``gptkit.batching``)
    on standard error: bare text, or JSON lines."""
    logger = logging.getLogger("gptkit")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if json_lines else logging.Formatter("%(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free port, chosen by the system)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise GptkitError(f"cannot resolve --host {host}: {exc}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise GptkitError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    model: GPTModel,
    model_name: str,
    settings: ServeSettings,
    api_key: str | None = None,
) -> int:
    """Serve ``model`` until SIGTERM or Ctrl-C; the process's exit code.
    ``api_key``: required as ``Authorization: Bearer KEY`` on ``/v1``."""
    import torch

    from gptkit.serve.app import create_app
    from gptkit.serve.engine.batching import BatchingEngine

    if settings.threads:
        torch.set_num_threads(settings.threads)
    configure_logging(settings.log_json)
    try:
        engine = BatchingEngine(
            model,
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            max_seq_len=settings.max_seq_len,
            prefill_chunk=settings.prefill_chunk,
        )
    except RuntimeError as exc:  # the cache did not fit in memory
        raise GptkitError(
            f"cannot allocate the key/value cache ({exc}); lower --max-batch-size"
            " or --max-seq-len"
        ) from None
    app = create_app(engine, settings, model_name, api_key)
    state = app.state  # type: ignore[attr-defined]
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout)),
        timeout_keep_alive=5,
    )

    def drain() -> None:
        state.draining = True

    server = _DrainingServer(config, drain)
    display = f"[{host}]" if ":" in host else host
    print(
        f"gptkit serve: {model_name} on http://{display}:{port}/v1"
        f" (batch {settings.max_batch_size}, {engine.max_seq_len} tokens per"
        " sequence); SIGTERM or Ctrl-C stops",
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if signal.SIGINT in server.signals:
        return 130
    return 0
