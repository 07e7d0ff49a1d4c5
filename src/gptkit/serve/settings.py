"""The server's settings, declared once (torch-free): the ``gptkit serve``
options and the keywords of :func:`gptkit.serve.server.serve` come from here.
Which model to serve is :class:`~gptkit.api.settings.LoadSettings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gptkit.api.settings import NOT_SAVED, Settings, setting
from gptkit.errors import SettingError


@dataclass
class ServeSettings(Settings):
    """How ``gptkit serve`` listens, batches and limits requests.

    ``max_seq_len`` is prompt + generated tokens per sequence; the key/value
    cache holds ``max_batch_size`` such sequences.
    """

    #: Seconds a client should wait before retrying a 503.
    retry_after: ClassVar[int] = 1

    host: str = setting(
        "127.0.0.1",
        resume=NOT_SAVED,
        help="Address to listen on (0.0.0.0: every interface).",
    )
    port: int = setting(
        8000,
        ge=0,
        le=65535,
        resume=NOT_SAVED,
        help="Port (0: any free port, printed at start).",
    )
    model_name: str | None = setting(
        None,
        resume=NOT_SAVED,
        help="The model's id in the API.",
        default_help="from --weights (hf:gpt2 -> gpt2) or the preset",
    )
    max_batch_size: int = setting(
        16,
        ge=1,
        resume=NOT_SAVED,
        help="Sequences decoded together (rows of the key/value cache).",
    )
    max_seq_len: int | None = setting(
        None,
        ge=2,
        resume=NOT_SAVED,
        help="Prompt + new tokens per sequence.",
        default_help="the context length",
    )
    max_queue: int = setting(
        64,
        ge=1,
        resume=NOT_SAVED,
        help="Prompts waiting for rows; more get 503 with Retry-After (a request"
        " with more prompts than this gets 400).",
    )
    max_request_tokens: int | None = setting(
        None,
        ge=1,
        resume=NOT_SAVED,
        help="Tokens one request may ask for: over its sequences (prompts x n, or"
        " a search's beams), prompt + max_tokens each; more get 400.",
        default_help="--max-batch-size x --max-seq-len",
    )
    read_timeout: float = setting(
        30.0,
        gt=0.0,
        resume=NOT_SAVED,
        help="Seconds a client may take to send a whole request (headers and"
        " body); slower connections are closed.",
    )
    draft: tuple[str, ...] = setting(
        (),
        metavar="[NAME=]SPEC",
        resume=NOT_SAVED,
        help="A draft model that requests may name for speculative decoding"
        " (sampler_options.draft = NAME), loaded at start-up; repeatable. Requests"
        " name no other weights.",
    )
    prefill_chunk: int = setting(
        256,
        ge=1,
        resume=NOT_SAVED,
        help="Prompt tokens prefilled per step (a long prompt does not stall the"
        " batch; short ones are prefilled together up to this many).",
    )
    request_timeout: float = setting(
        600.0,
        gt=0.0,
        resume=NOT_SAVED,
        help="Seconds a request may take, waiting included (504 after).",
    )
    api_key_env: str | None = setting(
        None,
        metavar="VAR",
        resume=NOT_SAVED,
        help="Require 'Authorization: Bearer KEY' on /v1, KEY read from this"
        " environment variable.",
    )
    max_body_bytes: int = setting(
        1 << 20,
        ge=1,
        resume=NOT_SAVED,
        help="Largest request body accepted (413 beyond).",
    )
    drain_timeout: float = setting(
        30.0,
        ge=0.0,
        resume=NOT_SAVED,
        help="On SIGTERM, seconds in-flight requests may take to finish.",
    )
    log_json: bool = setting(
        False, resume=NOT_SAVED, help="Log one JSON object per request."
    )
    threads: int = setting(
        0,
        ge=0,
        resume=NOT_SAVED,
        help="CPU threads for torch (0: torch's default, every core).",
    )

    def check(self) -> None:
        super().check()
        if self.api_key_env is not None and not self.api_key_env:
            raise SettingError("{api_key_env} is empty", settings_class=type(self))
        self.drafts()

    def drafts(self) -> dict[str, str]:
        """``{name: weights spec}`` of the ``draft`` settings (``NAME=SPEC``, or
        ``SPEC`` named as ``--model-name`` would name it)."""
        from gptkit.serve.loading import default_name

        out: dict[str, str] = {}
        for item in self.draft:
            name, sep, spec = item.partition("=")
            if not sep or ":" in name or "/" in name:
                name, spec = default_name(item), item
            if not name or not spec:
                raise SettingError(
                    f"{{draft}} {item!r} is not NAME=SPEC or SPEC",
                    settings_class=type(self),
                )
            if name in out:
                raise SettingError(
                    f"{{draft}} names {name!r} twice", settings_class=type(self)
                )
            out[name] = spec
        return out
