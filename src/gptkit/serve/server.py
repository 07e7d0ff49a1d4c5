"""Run the app under uvicorn: bind, announce, drain on SIGTERM.

SIGTERM (or Ctrl-C) stops accepting connections, answers 503 to new requests
on open connections, lets in-flight requests finish for up to
``drain_timeout`` seconds, cancels what is left, stops the engine and returns
(exit code 0 for SIGTERM, 130 for Ctrl-C). uvicorn itself would re-raise the
signal after its graceful shutdown, so the process would die of it (exit
143); gptkit's server keeps uvicorn's shutdown and drops that last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gptkit.errors import GptkitError
from gptkit.serve.settings import ServeSettings

if TYPE_CHECKING:
    from gptkit.api.serving import GPTModel

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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` (``\\uNNNN``):
    one record is one line, whatever a client put in a path."""

    def hexed(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(hexed, text)


class OneLine(logging.Formatter):
    """Text records with control characters escaped (no forged lines); a
    traceback, when there is one, follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        message = escape_control(record.getMessage())
        if record.exc_info:
            return message + "\n" + self.formatException(record.exc_info)
        return message


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


#: Loggers written to standard error: gptkit's and uvicorn's (whose own
#: configuration is not used, so that ``--log-json`` covers its lines too).
LOGGERS = {"gptkit": logging.INFO, "uvicorn": logging.WARNING}


def configure_logging(json_lines: bool) -> None:
    """Request lines (``gptkit.serve``), engine errors (``gptkit.batching``)
    and uvicorn's warnings on standard error: text with control characters
    escaped, or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else OneLine())
    for name, level in LOGGERS.items():
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True


class TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a read timeout: a client has
    ``read_timeout`` seconds from its connection (or the end of the previous
    response) to send a whole request, headers and body, or the connection is
    closed (slow-loris clients hold no connections; an application waiting
    for the body sees a disconnect)."""

    read_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_read_deadline", None)
        if timer is not None:
            timer.cancel()
            self._read_deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()  # the whole request is in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            log.warning(
                "closed a connection from %s: no whole request within %gs",
                f"{self.client[0]}:{self.client[1]}" if self.client else "?",
                self.read_timeout,
            )
            self.transport.close()


def timed_protocol(read_timeout: float) -> type[TimedH11]:
    """:class:`TimedH11` with this server's read timeout."""
    return type("TimedH11", (TimedH11,), {"read_timeout": read_timeout})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


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
    drafts: dict[str, GPTModel] | None = None,
    tokenizer: Any = None,
) -> int:
    """Serve ``model`` until SIGTERM or Ctrl-C; the process's exit code.
    ``api_key``: required as ``Authorization: Bearer KEY`` on ``/v1``;
    ``drafts``: the draft models requests may name, by name."""
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
            tokenizer=tokenizer,
        )
    except RuntimeError as exc:  # the cache did not fit in memory
        raise GptkitError(
            f"cannot allocate the key/value cache ({exc}); lower --max-batch-size"
            " or --max-seq-len"
        ) from None
    app = create_app(engine, settings, model_name, api_key, drafts)
    state = app.state  # type: ignore[attr-defined]
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=timed_protocol(settings.read_timeout),
        log_config=None,
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout)),
        timeout_keep_alive=5,
    )

    def drain() -> None:
        state.draining = True

    server = _DrainingServer(config, drain)
    if api_key is None and not is_loopback(settings.host):
        print(
            f"gptkit serve: warning: listening on {settings.host} without an API"
            " key: anyone who can reach this port can use the model"
            " (--api-key-env VAR requires a key)",
            file=sys.stderr,
            flush=True,
        )
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
