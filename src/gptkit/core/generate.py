"""The generation engine shared by every per-token sampler.

The prompt is prefilled once into a preallocated :class:`KVCache`; each step then
feeds one token. Prompts of different lengths are left-padded and batched (an
attention mask hides the padding and positions count real tokens only), so each
row gets the text it would get alone. When prompt + new tokens outgrow the
context length, the engine keeps the most recent ``context_length`` tokens, as
the book's ``generate`` does: positions shift with the window, so cached keys
and values are stale, and every step past that point recomputes the window
(quadratic, but only beyond the context length).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gptkit.core.errors import GptkitError
from gptkit.core.interfaces import Sampler
from gptkit.core.model import GPTModel, KVCache
from gptkit.core.tokenizer import EOT_ID, N_VOCAB

#: Called after every step with (row, new token id) for rows still running.
TokenCallback = Callable[[int, int], None]


@dataclass
class Generated:
    """One row's result: the prompt ids, the new ids, why it stopped."""

    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "eos" | "stop"


def prepare_prompt(
    ids: Sequence[int], context_length: int, truncate: bool
) -> list[int]:
    """An empty prompt starts from end-of-text (as GPT-2 does); a prompt longer
    than the context is cut to its last tokens, or refused when not ``truncate``."""
    ids = list(ids) or [EOT_ID]
    if len(ids) > context_length:
        if not truncate:
            raise GptkitError(
                f"the prompt has {len(ids)} tokens, more than the context length"
                f" {context_length}; shorten it or allow truncation"
            )
        ids = ids[-context_length:]
    return ids


def _left_pad(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """(ids, mask), each (B, max_len); padding on the left, mask True on tokens."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = True
    return ids.to(device), mask.to(device)


def _positions(mask: Tensor) -> Tensor:
    """Position of each token among the real tokens of its row (0 for padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def generate_tokens(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    sampler: Sampler,
    *,
    max_new_tokens: int,
    eos_id: int | None = EOT_ID,
    stop: Callable[[int, list[int]], bool] | None = None,
    generator: torch.Generator | None = None,
    truncate: bool = True,
    on_token: TokenCallback | None = None,
    vocab_limit: int = N_VOCAB,
) -> list[Generated]:
    """Generate up to ``max_new_tokens`` for each prompt (a batch).

    :param stop: ``stop(row, new_ids)`` returning True ends that row (stop strings).
    :param vocab_limit: ids at or above it are never produced (padded vocabularies).
    """
    was_training = model.training
    model.eval()
    try:
        return _generate(
            model,
            prompts,
            sampler,
            max_new_tokens,
            eos_id,
            stop,
            generator,
            truncate,
            on_token,
            vocab_limit,
        )
    finally:
        model.train(was_training)


def _generate(
    model: GPTModel,
    prompts: Sequence[Sequence[int]],
    sampler: Sampler,
    max_new_tokens: int,
    eos_id: int | None,
    stop: Callable[[int, list[int]], bool] | None,
    generator: torch.Generator | None,
    truncate: bool,
    on_token: TokenCallback | None,
    vocab_limit: int,
) -> list[Generated]:
    ctx = model.cfg.context_length
    device = next(model.parameters()).device
    rows = [prepare_prompt(p, ctx, truncate) for p in prompts]
    results = [Generated(prompt_ids=r) for r in rows]
    if max_new_tokens <= 0:
        return results
    ids, mask = _left_pad(rows, device)  # (B, P)
    batch = len(rows)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    cache_len = min(ids.shape[1] + max_new_tokens, ctx)
    dtype = next(model.parameters()).dtype
    cache: KVCache | None = KVCache.allocate(model.cfg, batch, cache_len, device, dtype)
    sampler.start(batch)
    padded = not bool(mask.all())
    logits = model(
        ids,
        cache=cache,
        position_ids=_positions(mask) if padded else None,
        attention_mask=mask if padded else None,
    )
    for step in range(max_new_tokens):
        last = logits[:, -1, :].float()
        if last.shape[-1] > vocab_limit:
            last[:, vocab_limit:] = float("-inf")
        next_ids = sampler.sample(last, generator)  # (B,)
        for row in running.nonzero().flatten().tolist():
            token = int(next_ids[row])
            result = results[row]
            result.new_ids.append(token)
            if on_token is not None:
                on_token(row, token)
            if eos_id is not None and token == eos_id:
                result.finish_reason = "eos"
                running[row] = False
            elif stop is not None and stop(row, result.new_ids):
                result.finish_reason = "stop"
                running[row] = False
        if not running.any() or step == max_new_tokens - 1:
            break
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if cache is not None and cache.length < cache.capacity:
            logits = model(
                next_ids[:, None],
                cache=cache,
                position_ids=_positions(mask)[:, -1:] if padded else None,
                attention_mask=mask if padded else None,
            )
        else:
            # Past the context length: slide the window and recompute it.
            cache = None
            window, window_mask = ids[:, -ctx:], mask[:, -ctx:]
            padded = not bool(window_mask.all())
            logits = model(
                window,
                position_ids=_positions(window_mask) if padded else None,
                attention_mask=window_mask if padded else None,
            )
    return results


@dataclass
class TextResult:
    """One prompt's continuation, as text and ids."""

    prompt: str
    completion: str
    prompt_ids: list[int]
    new_ids: list[int]
    finish_reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "prompt": self.prompt,
            "completion": self.completion,
            "text": self.prompt + self.completion,
            "prompt_ids": self.prompt_ids,
            "token_ids": self.new_ids,
            "finish_reason": self.finish_reason,
        }


class _Streamer:
    """Turns token ids into text deltas, holding back incomplete UTF-8."""

    def __init__(self, write: Callable[[int, str], None]) -> None:
        self.write = write
        self.ids: dict[int, list[int]] = {}
        self.sent: dict[int, int] = {}

    def __call__(self, row: int, token: int) -> None:
        from gptkit.core.tokenizer import decode

        ids = self.ids.setdefault(row, [])
        ids.append(token)
        text = decode(ids)
        if text.endswith("\ufffd"):
            return
        done = self.sent.get(row, 0)
        if len(text) > done:
            self.write(row, text[done:])
            self.sent[row] = len(text)


def generate_text(
    model: GPTModel,
    prompts: Sequence[str],
    sampler: Sampler,
    *,
    max_new_tokens: int = 50,
    stop_strings: Sequence[str] = (),
    seed: int | None = None,
    truncate: bool = True,
    stop_at_eos: bool = True,
    on_text: Callable[[int, str], None] | None = None,
) -> list[TextResult]:
    """Continue each prompt (batched); ``on_text(row, delta)`` streams text."""
    from gptkit.core.tokenizer import decode, encode

    prompt_ids = [encode(p) for p in prompts]
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    def stop(row: int, new_ids: list[int]) -> bool:
        text = decode(new_ids)
        return any(s in text for s in stop_strings)

    results = generate_tokens(
        model,
        prompt_ids,
        sampler,
        max_new_tokens=max_new_tokens,
        eos_id=EOT_ID if stop_at_eos else None,
        stop=stop if stop_strings else None,
        generator=generator,
        truncate=truncate,
        on_token=_Streamer(on_text) if on_text is not None else None,
    )
    out = []
    for prompt, r in zip(prompts, results, strict=True):
        ids = r.new_ids[:-1] if r.finish_reason == "eos" else r.new_ids
        completion = decode(ids)
        if r.finish_reason == "stop":
            cut = min(
                (completion.find(s) for s in stop_strings if s in completion),
                default=len(completion),
            )
            completion = completion[:cut]
        out.append(
            TextResult(prompt, completion, r.prompt_ids, r.new_ids, r.finish_reason)
        )
    return out
