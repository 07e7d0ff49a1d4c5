"""Prometheus metrics (``GET /metrics``), with prometheus-client.

Each app has its own registry (several servers may live in one process, as in
tests): request counts and latencies by route and status, time to first token,
prompt and generated tokens, and gauges read from the engine at scrape time
(requests waiting, rows generating, decode steps) plus the process collector
(resident memory, CPU time, open files).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The server's metrics in their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "gptkit_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gptkit_request_seconds",
            "Time from receiving a request to its last byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gptkit_time_to_first_token_seconds",
            "Time from receiving a completion request to its first token",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "gptkit_prompt_tokens", "Prompt tokens processed", registry=self.registry
        )
        self.generated_tokens = Counter(
            "gptkit_generated_tokens", "Tokens generated", registry=self.registry
        )

    def watch_engine(
        self,
        queued: Callable[[], float],
        running: Callable[[], float],
        steps: Callable[[], float],
    ) -> None:
        """Gauges that read the engine when scraped."""
        for name, doc, read in (
            ("gptkit_requests_waiting", "Requests waiting for rows", queued),
            ("gptkit_rows_running", "Sequences generating now", running),
            ("gptkit_decode_steps", "Batched decode steps run", steps),
        ):
            Gauge(name, doc, registry=self.registry).set_function(read)

    def observe_request(
        self, route: str, status: int, seconds: float, usage: dict[str, int]
    ) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        self.prompt_tokens.inc(usage.get("prompt_tokens", 0))
        self.generated_tokens.inc(usage.get("completion_tokens", 0))

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
