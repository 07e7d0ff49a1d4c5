"""Load test of ``gptkit serve``: concurrent streaming clients on loopback.

Starts ``gptkit serve`` on a random 127.0.0.1 port with a model (default: the
124M-shaped preset with random weights; generation cost does not depend on the
weights' values), then for each concurrency level runs that many streaming
clients at once, each sending ``--requests`` completions one after another
(``ignore_eos``: every request generates exactly ``--max-tokens`` tokens), and
reports per level:

- aggregate tokens/s: tokens generated for all clients (each stream's
  ``usage``) / the level's wall time;
- time to first token (request sent -> first token's event) p50/p99;
- per-token latency (gap between a stream's consecutive text events; a token
  that ends inside a UTF-8 character arrives with the next one) p50/p99;
- errors (anything but a complete stream; must be 0);
- the server's resident memory after the warm-up and at the end;
- the ratio of the level's aggregate tokens/s to the baseline's.

The baseline is the same kind of request sent one after another by a single
client (``--baseline-requests`` of them, run first): what a server without
batching gives. Every client is a minimal asyncio HTTP/1.0 + SSE reader (not
the openai package), so the client side spends little of the shared CPU.
The levels run in ``--rounds`` interleaved rounds (baseline, 1, 4, ... then
again) and each keeps its fastest round; errors add up over all rounds.
Bounded: ``--timeout`` seconds per level and round at most.

    flock /work/coord/bench.lock python benchmarks/scripts/serve_load.py
    python benchmarks/scripts/serve_load.py --levels 1 4 16 64 --max-batch-size 64 \\
        --out serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROMPT = "Every effort moves you forward, one small step at a time, until"


@dataclass
class Stream:
    """One request's timings."""

    sent: float
    events: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.events[0] - self.sent

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.events, self.events[1:], strict=False)]


async def one_request(port: int, body: bytes, timeout: float) -> Stream:
    """POST a streaming completion; time every token event."""
    stream = Stream(time.monotonic())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        if b" 200 " not in status:
            stream.error = status.decode(errors="replace").strip()
            return stream
        done = False
        end = time.monotonic() + timeout
        while line := await asyncio.wait_for(reader.readline(), end - time.monotonic()):
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                done = True
                break
            event = json.loads(payload)
            if "error" in event:
                stream.error = event["error"]["message"]
                break
            if event.get("usage"):
                stream.tokens = event["usage"]["completion_tokens"]
            elif any(c["text"] for c in event["choices"]):
                stream.events.append(time.monotonic())
        writer.close()
        if not done and stream.error is None:
            stream.error = "the stream ended without [DONE]"
    except (OSError, TimeoutError, ValueError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    return stream


async def run_level(
    port: int, clients: int, requests: int, body: bytes, timeout: float
) -> tuple[list[Stream], float]:
    """``clients`` clients at once, each sending ``requests`` one after another."""

    async def client() -> list[Stream]:
        return [await one_request(port, body, timeout) for _ in range(requests)]

    start = time.monotonic()
    results = await asyncio.gather(*(client() for _ in range(clients)))
    return [s for streams in results for s in streams], time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def summarize(name: str, streams: list[Stream], wall: float) -> dict:
    ok = [s for s in streams if s.error is None]
    gaps = [g for s in ok for g in s.gaps()]
    tokens = sum(s.tokens for s in ok)
    return {
        "level": name,
        "requests": len(streams),
        "errors": len(streams) - len(ok),
        "first_error": next((s.error for s in streams if s.error), None),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2) if wall else 0.0,
        "ttft_p50_ms": round(1000 * percentile([s.ttft for s in ok], 50), 1),
        "ttft_p99_ms": round(1000 * percentile([s.ttft for s in ok], 99), 1),
        "token_p50_ms": round(1000 * percentile(gaps, 50), 1),
        "token_p99_ms": round(1000 * percentile(gaps, 99), 1),
    }


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "gptkit", "serve", "--port", "0"]
    command += (
        ["--weights", args.weights] if args.weights else ["--preset", args.preset]
    )
    command += [
        "--model-name", "bench",
        "--device", "cpu",
        "--max-seq-len", str(args.max_seq_len),
        "--max-batch-size", str(args.max_batch_size),
        "--max-queue", str(max(64, max(args.levels))),
        "--threads", str(args.threads),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            match = re.search(rb"127\.0\.0\.1:(\d+)/v1", proc.stdout.readline())
            if match:
                return proc, int(match.group(1))
    proc.kill()
    raise SystemExit("gptkit serve did not start")


def resident_mib(pid: int) -> float | None:
    """A process's resident memory (Linux), MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return round(int(match.group(1)) / 1024, 1) if match else None


def machine() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def table(rows: list[dict], baseline: dict) -> str:
    head = (
        "| clients | requests | tokens/s | x baseline | TTFT p50 / p99 (ms)"
        " | per token p50 / p99 (ms) | errors |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in [baseline, *rows]:
        ratio = row["tokens_per_s"] / baseline["tokens_per_s"]
        lines.append(
            f"| {row['level']} | {row['requests']} | {row['tokens_per_s']:.1f}"
            f" | {ratio:.2f}x | {row['ttft_p50_ms']:.0f} / {row['ttft_p99_ms']:.0f}"
            f" | {row['token_p50_ms']:.0f} / {row['token_p99_ms']:.0f}"
            f" | {row['errors']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--weights", help="serve these weights instead of --preset")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=1, help="per client")
    parser.add_argument("--baseline-requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="0: greedy (cheaper draws)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    body = json.dumps(
        {
            "model": "bench",
            "prompt": PROMPT,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
    ).encode()
    load_before = os.getloadavg()
    proc, port = start_server(args)
    try:
        warm, _ = asyncio.run(run_level(port, 2, 1, body, args.timeout))
        assert all(s.error is None for s in warm), warm[0].error
        rss_start = resident_mib(proc.pid)
        # Rounds interleave the levels, so that a machine that slows down midway
        # slows each of them alike; each level keeps its fastest round.
        best: dict[str, dict] = {}
        plan = [("1 after another", 1, args.baseline_requests)]
        plan += [(str(c), c, args.requests) for c in args.levels]
        for round_ in range(args.rounds):
            for name, clients, requests in plan:
                streams, wall = asyncio.run(
                    run_level(port, clients, requests, body, args.timeout)
                )
                row = summarize(name, streams, wall) | {"round": round_}
                print(json.dumps(row), flush=True)
                if name not in best or row["tokens_per_s"] > best[name]["tokens_per_s"]:
                    errors = best.get(name, {}).get("errors", 0)
                    best[name] = row | {"errors": max(errors, row["errors"])}
                else:
                    best[name]["errors"] += row["errors"]
        baseline = best.pop("1 after another")
        rows = list(best.values())
        rss_end = resident_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    report = {
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "baseline": baseline,
        "levels": rows,
        "server_rss_mib": {"after_warm_up": rss_start, "at_the_end": rss_end},
    }
    by_level = {r["level"]: r["tokens_per_s"] for r in rows}
    if "16" in by_level and "1" in by_level:
        report["ratio_16_over_1"] = round(by_level["16"] / by_level["1"], 2)
    print(table(rows, baseline))
    if "ratio_16_over_1" in report:
        print(f"16 clients / 1 client aggregate tokens/s: {report['ratio_16_over_1']}x")
    print(f"load average before {load_before}, after {report['load_after']}")
    print(
        f"server resident memory: {rss_start} MiB after the warm-up, {rss_end} MiB"
        " at the end"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if any(r["errors"] for r in [baseline, *rows]):
        raise SystemExit("errors during the load test")


if __name__ == "__main__":
    main()
