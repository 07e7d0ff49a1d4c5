"""A real ``gptkit serve`` process for the tests: a tiny model saved to disk,
a random port on 127.0.0.1, the official ``openai`` client, raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAULTS = REPO / "tests" / "serve_with_faults.py"
MODEL_NAME = "tiny-test"
API_KEY_ENV = "GPTKIT_TEST_API_KEY"
START_TIMEOUT = 180.0  # importing torch on a loaded 2-core machine is slow


def save_tiny_run(
    path: Path,
    seed: int = 123,
    context_length: int = 128,
    prompt_style: str | None = None,
) -> Path:
    """A run directory with a tiny random model (2 layers, 64 wide); with
    ``prompt_style`` (``"alpaca"``) its checkpoint records that style, as a
    finetuned run's does, so ``/v1/chat/completions`` serves it."""
    import torch

    from gptkit.core.checkpoints.native import save_checkpoint
    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel
    from gptkit.core.registry import get_registry
    from gptkit.runs.finetune import style_record

    cfg = get_preset("tiny").replace(context_length=context_length)
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    info = None
    if prompt_style is not None:
        style = get_registry().prompt_styles.create(prompt_style, {})
        info = {"prompt_style": style_record(style)}
    save_checkpoint(path / "checkpoints", 1, model, cfg, info=info)
    return path


class ServerProcess:
    """``gptkit serve`` in a subprocess; ``stop()`` sends SIGTERM."""

    def __init__(
        self,
        weights: Path,
        *args: str,
        faults: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        command = [sys.executable]
        command += [str(FAULTS)] if faults else ["-m", "gptkit"]
        command += ["serve", "--weights", str(weights), "--model-name", MODEL_NAME]
        command += ["--port", "0", "--device", "cpu", "--threads", "1", *args]
        self.stderr_path = weights.parent / f"serve-{os.getpid()}-{id(self)}.log"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        self.port = self._read_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_port(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                match = re.search(rb"http://127\.0\.0\.1:(\d+)/v1", line)
                if match:
                    return int(match.group(1))
        self.proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}\n{self.log()}")

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, api_key: str = "unused", **kwargs: Any) -> Any:
        from openai import OpenAI

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120.0)
        return OpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def async_client(self, api_key: str = "unused", **kwargs: Any) -> Any:
        from openai import AsyncOpenAI

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120.0)
        return AsyncOpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers with lowercase names, JSON body or text) of a request."""
        return http_request(self.port, method, path, body, headers)

    def health(self) -> dict[str, Any]:
        status, _, body = self.request("GET", "/health")
        return {"http_status": status, **body}

    def rss_bytes(self) -> int:
        """The server's resident memory now (Linux)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        sent = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, parsed
    finally:
        conn.close()


def wait_until(predicate: Any, timeout: float = 30.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()
