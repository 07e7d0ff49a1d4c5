"""Request bodies, validated with pydantic: OpenAI's fields and gptkit's.

Types are strict, as OpenAI's API is (``"5"`` is not an integer), and an
unknown field is rejected (OpenAI: "Unrecognized request argument"). Ranges are
OpenAI's: ``temperature`` 0-2, ``top_p`` (0, 1], penalties -2..2, ``logprobs``
0-5, ``logit_bias`` -100..100, at most 4 stop strings.

gptkit's extension fields: ``sampler`` (any installed sampler plugin) with
``sampler_options``; the shortcuts ``top_k`` and ``min_p`` (as vLLM names
them); the engine's ``repetition_penalty`` and ``no_repeat_ngram_size``;
``ignore_eos`` (keep generating past end-of-text, for benchmarks).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gptkit.serve.errors import APIError, bad_request

MAX_STOP_STRINGS = 4


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """``POST /v1/completions``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    prompt: Any = Field(description="a string, strings, token ids, or lists of them")
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Any = Field(default=None, validate_default=True)
    seed: int | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None
    user: str | None = None  # accepted and ignored
    # gptkit's extensions
    sampler: str | None = None
    sampler_options: dict[str, Any] | None = None
    top_k: int | None = Field(default=None, ge=1)
    min_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    no_repeat_ngram_size: int | None = Field(default=None, ge=0)
    ignore_eos: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> list[str] | list[list[int]]:
        """Normalised to a list of prompts: strings or lists of token ids."""
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value):
                return value
            if all(_is_id(v) for v in value):
                return [value]
            if all(isinstance(v, list) and all(_is_id(i) for i in v) for v in value):
                return value
        raise ValueError(
            "must be a string, a list of strings, a list of token ids or a list of"
            " lists of token ids"
        )

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("must be a string or a list of strings")
        if len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"takes at most {MAX_STOP_STRINGS} strings")
        return [s for s in value if s]

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"values must be between -100 and 100, got {bias}")
        return value


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_request(model: type[BaseModel], body: bytes) -> Any:
    """The validated request, or the 400 APIError naming the first problem."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _as_api_error(exc) from None


def _as_api_error(exc: ValidationError) -> APIError:
    error = exc.errors(include_url=False)[0]
    kind, loc = error["type"], error["loc"]
    param = ".".join(str(part) for part in loc) or None
    if kind == "json_invalid":
        return bad_request(f"the body is not valid JSON: {error['msg']}")
    if kind == "model_type":
        return bad_request("the body must be a JSON object")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param)
    if kind == "missing":
        return bad_request(f"missing required argument: {param}", param)
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    got = error.get("input")
    detail = f" (got {got!r})" if kind != "value_error" and _short(got) else ""
    return bad_request(f"{param}: {message}{detail}", param)


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 40
