"""Request and response bodies as pydantic models: OpenAI's fields and
gptkit's. Requests are validated with them; ``/openapi.json`` is generated
from them (:mod:`gptkit.serve.openapi`).

Types are strict, as OpenAI's API is (``"5"`` is not an integer), and an
unknown field is rejected (OpenAI: "Unrecognized request argument"). Ranges are
OpenAI's: ``temperature`` 0-2, ``top_p`` (0, 1], penalties -2..2, ``logprobs``
0-5, ``logit_bias`` -100..100, at most 4 stop strings; and gptkit's bounds on
one request's work: stop strings of at most ``MAX_STOP_CHARS`` characters, at
most ``MAX_LOGIT_BIAS`` biased tokens, seeds that fit a signed 64-bit integer.

gptkit's extension fields: ``sampler`` (any installed sampler plugin) with
``sampler_options``; the shortcuts ``top_k`` and ``min_p`` (as vLLM names
them); the engine's ``repetition_penalty`` and ``no_repeat_ngram_size``;
``ignore_eos`` (keep generating past end-of-text, for benchmarks).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from gptkit.serve.errors import APIError, bad_request

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 1000
MAX_LOGIT_BIAS = 300
MAX_LOGPROBS = 5
MAX_SEED = 2**63 - 1

TokenId = Annotated[int, Field(ge=0)]
#: What ``prompt`` takes (checked by the validator, described by this type).
PromptForms = str | list[str] | list[TokenId] | list[list[TokenId]]
StopString = Annotated[str, StringConstraints(max_length=MAX_STOP_CHARS)]
StopForms = str | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None
BiasKey = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$")]
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


def _schema_of(forms: Any) -> WithJsonSchema:
    return WithJsonSchema(TypeAdapter(forms).json_schema())


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class _SamplingRequest(BaseModel):
    """The fields the completions and chat requests share: OpenAI's sampling
    fields and gptkit's sampler extensions (same names, bounds and defaults)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: Annotated[
        dict[str, float] | None,
        _schema_of(
            Annotated[dict[BiasKey, Bias], Field(max_length=MAX_LOGIT_BIAS)] | None
        ),
    ] = None
    user: str | None = None  # accepted and ignored
    # gptkit's extensions
    sampler: str | None = None
    sampler_options: dict[str, Any] | None = None
    top_k: int | None = Field(default=None, ge=1)
    min_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    no_repeat_ngram_size: int | None = Field(default=None, ge=0)


class CompletionRequest(_SamplingRequest):
    """``POST /v1/completions``."""

    prompt: Annotated[Any, _schema_of(PromptForms)] = Field(
        description="a string, strings, token ids, or lists of them"
    )
    max_tokens: int | None = Field(default=16, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    stop: Annotated[Any, _schema_of(StopForms)] = Field(
        default=None, validate_default=True
    )
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
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
        if any(len(s) > MAX_STOP_CHARS for s in value):
            raise ValueError(f"strings of at most {MAX_STOP_CHARS} characters")
        return [s for s in value if s]

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"takes at most {MAX_LOGIT_BIAS} tokens")
        for key, bias in (value or {}).items():
            # ASCII digits only ("²".isdigit() is True), at most 10 of them
            if not (key.isascii() and key.isdigit() and len(key) <= 10):
                shown = key if len(key) <= 20 else key[:20] + "..."
                raise ValueError(f"keys must be token ids, got {shown!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"values must be between -100 and 100, got {bias}")
        return value


class ChatMessage(BaseModel):
    """One message of a chat: ``system``, ``user`` or ``assistant``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None  # accepted and ignored


class ChatCompletionRequest(_SamplingRequest):
    """``POST /v1/chat/completions``: the messages become one prompt in the
    model's prompt style; the other fields are the completions request's (and
    are checked by it, :func:`gptkit.serve.chat.as_completion`)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: Annotated[Any, _schema_of(StopForms)] = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)


# -- responses ------------------------------------------------------------------


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy ``logprobs`` object of a choice."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """A completion, or (``"stream": true``) one server-sent event's chunk of
    it, whose ``usage`` comes last and only with ``include_usage``."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float | None
    bytes: list[int]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(BaseModel):
    """OpenAI's chat logprobs: one entry per generated token."""

    content: list[ChatTokenLogprob]


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletion(BaseModel):
    """The answer to ``POST /v1/chat/completions`` (``stream`` false)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error: OpenAI's error object."""

    error: ErrorObject


class Limits(BaseModel):
    """What one request may ask of this server (gptkit's extension)."""

    max_prompts: int = Field(description="prompts in one request")
    max_n: int = Field(description="choices per prompt (n): rows of the batch")
    max_beams: int = Field(description="sequences a search decodes together")
    max_request_tokens: int = Field(
        description="sum over a request's sequences of prompt + max_tokens"
    )
    max_logprobs: int
    max_stop_strings: int
    max_stop_chars: int
    max_logit_bias: int
    max_body_bytes: int
    request_timeout_s: float
    drafts: list[str] = Field(description="drafts sampler_options.draft may name")


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int
    limits: Limits


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Health(BaseModel):
    status: Literal["ok", "draining", "engine stopped"]
    model: str
    running: int
    waiting: int


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
    if "[key]" in loc:  # a key of a mapping
        param = str(loc[0])
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    got = error.get("input")
    detail = f" (got {got!r})" if kind != "value_error" and _short(got) else ""
    return bad_request(f"{param}: {message}{detail}", param)


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 40
