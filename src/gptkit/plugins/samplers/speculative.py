"""Speculative decoding (Leviathan et al., 2023, "Fast Inference from
Transformers via Speculative Decoding"; Chen et al., 2023, "Accelerating Large
Language Model Decoding with Speculative Sampling") as a search strategy.

Each round a small draft model proposes ``k`` tokens, one cheap forward pass
each, and the model verifies all of them in one forward pass over the
proposals. Greedy (``temperature=0``): proposals are kept while they equal the
model's argmax; the first mismatch is replaced by the model's argmax, so the
output is the model's own greedy output. Sampling: proposal ``x ~ q`` is kept
with probability ``min(1, p(x) / q(x))``; the first rejected one is replaced by
a draw from ``norm(max(0, p - q))``; when all ``k`` are kept a bonus token is
drawn from ``p`` — the output follows the model's distribution ``p`` exactly
(Leviathan et al., theorem 1). ``p`` and ``q`` are the two models'
distributions after the same temperature / top-k / top-p warping.

Both key/value caches roll back on rejection (their filled length is set back;
the rejected positions are overwritten by the next round). Prompts are
decoded one at a time (speculation is a batch-1 latency technique). Once the
sequence reaches the end of either model's context, the remaining tokens come
from the engine's ordinary decode loop on the model (sliding window).

The draft is a weights spec (``-o draft=RUN_DIR``), loaded on first use on the
model's device and dtype (``draft_quantize`` quantizes it), or a model given
with :meth:`Speculative.with_draft`. It must share the model's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gptkit.core.generate import Generated, GenerationRequest, generate_tokens
from gptkit.core.interfaces import Sampler, SearchStrategy
from gptkit.core.model import GPTModel, KVCache
from gptkit.errors import GptkitError
from gptkit.plugins.samplers.token import Greedy, TopP
from gptkit.plugins.samplers.warpers import warp
from gptkit.system.sampling import multinomial


class Speculative(SearchStrategy):
    """Draft-and-verify decoding with the output distribution of the model."""

    name = "speculative"
    summary = "Speculative decoding: a small draft model proposes, the model verifies."
    #: Options without a usable default (benchmarks skip the sampler unless given).
    required_options = ("draft",)

    @dataclass(frozen=True)
    class Options:
        draft: str = field(
            default="",
            metadata={
                "help": "weights spec of the draft model (RUN_DIR, hf:gpt2, ...)",
                "resource": "weights",
            },
        )
        k: int = field(
            default=4,
            metadata={"help": "tokens the draft proposes per round", "ge": 1, "le": 64},
        )
        temperature: float = field(
            default=0.0, metadata={"help": "softmax temperature; 0 = greedy", "ge": 0.0}
        )
        top_k: int | None = field(
            default=None, metadata={"help": "keep the k most likely tokens", "ge": 1}
        )
        top_p: float | None = field(
            default=None,
            metadata={"help": "nucleus probability mass", "gt": 0.0, "le": 1.0},
        )
        draft_quantize: str | None = field(
            default=None,
            metadata={
                "help": "quantize the draft (int8, int4, ...)",
                "resource": "load",
            },
        )

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._draft: GPTModel | None = None
        self._draft_key: tuple[str, str] | None = None
        self.proposed = 0
        self.accepted = 0
        self.rounds = 0
        self.emitted = 0

    @classmethod
    def with_draft(cls, draft: GPTModel, **options: Any) -> Speculative:
        """A strategy using ``draft`` (a model in memory) as its draft."""
        strategy = cls(**options)
        strategy._draft = draft.eval()
        return strategy

    def use_resource(self, option: str, value: Any) -> None:
        """The model a server loaded for ``draft`` (requests name a draft, the
        server hands it over; nothing is opened per request)."""
        if option != "draft":
            raise GptkitError(f"the speculative sampler has no resource {option!r}")
        self._draft = value.eval()

    def stats(self) -> dict[str, float | int]:
        """Totals since creation: rounds, proposed and accepted draft tokens,
        tokens emitted, and the acceptance rate (accepted / proposed)."""
        return {
            "rounds": self.rounds,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "emitted": self.emitted,
            "acceptance_rate": self.accepted / self.proposed if self.proposed else 0.0,
            "tokens_per_round": self.emitted / self.rounds if self.rounds else 0.0,
        }

    # -- the draft model ------------------------------------------------------

    def draft_for(self, model: GPTModel, tokenizer: Any = None) -> GPTModel:
        """The draft model, on ``model``'s device and dtype; one whose
        tokenizer is not ``tokenizer`` (the model's) is refused."""
        param = next(model.parameters())
        if self._draft is None or (
            self.options.draft
            and self._draft_key != (str(param.device), str(param.dtype))
        ):
            if not self.options.draft:
                raise GptkitError(
                    "speculative decoding needs a draft model: -o draft=SPEC"
                    " (a run directory, hf:gpt2, ...)"
                )
            from gptkit.formats.models import model_from_spec
            from gptkit.formats.tokenizers import tokenizer_for

            self._draft, loaded = model_from_spec(
                self.options.draft,
                device=param.device,
                dtype=param.dtype,
                quantize=self.options.draft_quantize,
            )
            self._draft_tokenizer = tokenizer_for(self._draft.cfg, loaded.extra)
            self._draft.eval()
            self._draft_key = (str(param.device), str(param.dtype))
        return self._draft

    def _check_tokenizer(
        self, model: GPTModel, draft: GPTModel, tokenizer: Any
    ) -> None:
        """Draft and model must map text to the same ids."""
        ours = getattr(self, "_draft_tokenizer", None)
        if tokenizer is None or ours is None:
            mismatch = type(draft.cfg).arch != type(model.cfg).arch and (
                draft.cfg.vocab_size != model.cfg.vocab_size
            )
            if not mismatch:
                return
            theirs_name, ours_name = "the model's", "another"
        elif ours.fingerprint() == tokenizer.fingerprint():
            return
        else:
            theirs_name, ours_name = tokenizer.spec, ours.spec
        raise GptkitError(
            f"speculative decoding: the draft {self.options.draft or '(in memory)'}"
            f" uses {ours_name} tokenizer, not {theirs_name}"
            f" ({draft.cfg.vocab_size:,} vs {model.cfg.vocab_size:,} ids); the draft"
            " and the model must share one tokenizer"
        )

    # -- decoding -------------------------------------------------------------

    def generate(self, model: GPTModel, request: GenerationRequest) -> list[Generated]:
        if request.repetition_penalty != 1.0 or request.no_repeat_ngram_size:
            raise GptkitError(
                "speculative decoding does not support repetition_penalty or"
                " no_repeat_ngram_size"
            )
        draft = self.draft_for(model, request.tokenizer)
        self._check_tokenizer(model, draft, request.tokenizer)
        return [
            self._one(model, draft, prompt, index, request)
            for index, prompt in enumerate(request.prompts)
        ]

    def _probs(self, logits: Tensor, vocab: int) -> Tensor:
        """Distributions (T, V) from logits (T, V') after the warpers."""
        o = self.options
        logits = logits[:, :vocab].float()
        return torch.softmax(
            warp(logits, temp=o.temperature, k=o.top_k, p=o.top_p), dim=-1
        )

    def _one(
        self,
        model: GPTModel,
        draft: GPTModel,
        prompt: list[int],
        index: int,
        req: GenerationRequest,
    ) -> Generated:
        result = Generated(prompt_ids=list(prompt), prompt_index=index)
        if req.max_new_tokens <= 0:
            return result
        if max(prompt, default=0) >= draft.cfg.vocab_size:
            raise GptkitError(
                f"the prompt holds token ids past the draft's vocabulary of"
                f" {draft.cfg.vocab_size:,} tokens; use a draft with the target's"
            )
        greedy = self.options.temperature == 0.0
        vocab = min(req.vocab_limit, model.cfg.vocab_size, draft.cfg.vocab_size)
        device = next(model.parameters()).device
        g = req.generator
        seq = list(prompt)
        limit = len(prompt) + req.max_new_tokens
        model_cap = min(model.cfg.context_length, limit + self.options.k + 1)
        draft_cap = min(draft.cfg.context_length, limit + self.options.k + 1)
        mcache = _cache(model, model_cap, device)
        dcache = _cache(draft, draft_cap, device)
        while len(result.new_ids) < req.max_new_tokens:
            room = min(model_cap - len(seq), draft_cap - len(seq) + 1)
            k = min(self.options.k, room, req.max_new_tokens - len(result.new_ids))
            if k < 1:
                self._finish_plainly(model, seq, index, result, req)
                return result
            # 1. The draft proposes k tokens, feeding what its cache lacks first.
            proposals: list[int] = []
            draft_probs: list[Tensor] = []
            feed = seq[dcache.length :]
            for _ in range(k):
                logits = draft(_ids(feed, device), cache=dcache)[:, -1]  # (1, V')
                if greedy:
                    token = int(logits[0, :vocab].argmax())
                else:
                    q = self._probs(logits, vocab)  # (1, V)
                    token = int(multinomial(q, g)[0, 0])
                    draft_probs.append(q[0])
                proposals.append(token)
                feed = [token]
            # 2. The model scores every proposal in one pass.
            start = mcache.length
            logits = model(_ids(seq[start:] + proposals, device), cache=mcache)[0]
            scored = logits[len(seq) - start - 1 :]  # (k + 1, V'): after seq, d1..dk
            # 3. Keep the agreeing prefix; replace the first disagreement.
            kept, last = self._verify(scored, proposals, draft_probs, vocab, g)
            self.rounds += 1
            self.proposed += k
            self.accepted += kept
            new = [*proposals[:kept], last]
            # 4. Roll back both caches to the tokens that stay.
            mcache.truncate([len(seq) + kept])
            dcache.truncate([min(dcache.length, len(seq) + kept)])
            for token in new:
                seq.append(token)
                self.emitted += 1
                if self._emit(result, token, index, req):
                    return result
        return result

    def _verify(
        self,
        scored: Tensor,
        proposals: list[int],
        draft_probs: list[Tensor],
        vocab: int,
        g: torch.Generator | None,
    ) -> tuple[int, int]:
        """(proposals kept, the token that follows them)."""
        k = len(proposals)
        if self.options.temperature == 0.0:
            best = scored[:, :vocab].argmax(dim=-1).tolist()  # (k + 1,)
            kept = 0
            while kept < k and best[kept] == proposals[kept]:
                kept += 1
            return kept, best[kept]
        p = self._probs(scored, vocab)  # (k + 1, V)
        u = torch.rand(k, generator=g, device=p.device)
        for i, token in enumerate(proposals):
            q = draft_probs[i]
            if float(u[i]) * float(q[token]) >= float(p[i, token]):  # rejected
                residual = (p[i] - q).clamp(min=0.0)
                if float(residual.sum()) <= 0.0:
                    residual = p[i]
                return i, int(multinomial(residual, g)[0])
        return k, int(multinomial(p[k], g)[0])

    def _emit(
        self, result: Generated, token: int, row: int, req: GenerationRequest
    ) -> bool:
        """Append a token; True when generation ends with it."""
        result.new_ids.append(token)
        if req.on_token is not None:
            req.on_token(row, token)
        if req.is_eos(token):
            result.finish_reason = "eos"
            return True
        if req.stop is not None and req.stop(row, result.new_ids):
            result.finish_reason = "stop"
            return True
        return len(result.new_ids) >= req.max_new_tokens

    def _finish_plainly(
        self,
        model: GPTModel,
        seq: list[int],
        row: int,
        result: Generated,
        req: GenerationRequest,
    ) -> None:
        """The rest through the engine's decode loop (the context is full)."""
        o = self.options
        sampler: Sampler = (
            Greedy()
            if o.temperature == 0.0
            else TopP(temperature=o.temperature, top_k=o.top_k, top_p=o.top_p or 1.0)
        )
        offset = len(result.new_ids)

        def on_token(_: int, token: int) -> None:
            if req.on_token is not None:
                req.on_token(row, token)

        def stop(_: int, new_ids: list[int]) -> bool:
            return req.stop is not None and req.stop(row, result.new_ids + new_ids)

        [rest] = generate_tokens(
            model,
            [seq],
            sampler,
            max_new_tokens=req.max_new_tokens - offset,
            eos_id=req.eos_ids,
            stop=stop,
            generator=req.generator,
            on_token=on_token,
            vocab_limit=req.vocab_limit,
        )
        result.new_ids.extend(rest.new_ids)
        result.finish_reason = rest.finish_reason


def _cache(model: GPTModel, capacity: int, device: torch.device) -> KVCache:
    dtype = next(model.parameters()).dtype
    return KVCache.allocate(model.cfg, 1, capacity, device, dtype)


def _ids(tokens: list[int], device: torch.device) -> Tensor:
    return torch.tensor([tokens], dtype=torch.long, device=device)  # (1, T)
