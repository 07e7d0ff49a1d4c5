"""Beam search as a search strategy: it owns the whole decode loop.

Scoring follows transformers' beam search, so both return the same sequences
and scores on the same weights: each step keeps the ``2 x num_beams`` best
continuations of all beams by summed log-probability; candidates that end in
end-of-text (or reach ``max_new_tokens``) become hypotheses scored
``sum_logprobs / generated_length ** length_penalty``, where the length counts
the new tokens including end-of-text; the best ``num_beams`` hypotheses are
kept. ``early_stopping``: ``true`` stops once ``num_beams`` hypotheses are
finished; ``false`` also stops when the best running beam, normalised at its
current length, cannot beat the worst kept hypothesis; ``never`` estimates
that bound at the maximum length when ``length_penalty`` > 0.

The beams' key/value cache rows track their common history: which slots each
pair of rows holds as copies of one computation (the prompt, prefilled once;
the history a beam took from another). A beam that takes another's history
copies only the slots past those, and a decoding step reads the slots every
beam shares once for all of them (:attr:`KVCache.shared`; the fused CPU
step's attention), with the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gptkit.core.generate import (
    Decoder,
    Generated,
    GenerationRequest,
    next_token_logits,
)
from gptkit.core.interfaces import SearchStrategy
from gptkit.core.model import GPTModel
from gptkit.system import sampling

_FLOOR = -1.0e9  # the score of an empty slot or a forbidden candidate
_HUGE = 1.0e300  # the largest length normalisation


class BeamSearch(SearchStrategy):
    """Deterministic beam search over the model's log-probabilities."""

    name = "beam"
    summary = "Beam search with length penalty and early stopping."

    @dataclass(frozen=True)
    class Options:
        num_beams: int = field(default=4, metadata={"help": "beams kept", "ge": 1})
        length_penalty: float = field(
            default=1.0,
            metadata={"help": "exponent of the length normalisation (>0 favours long)"},
        )
        early_stopping: str = field(
            default="false",
            metadata={
                "help": "false, true or never (see the module docs)",
                "choices": ("false", "true", "never"),
            },
        )
        num_return_sequences: int = field(
            default=1, metadata={"help": "hypotheses returned per prompt", "ge": 1}
        )

        def validate(self) -> None:
            if self.num_return_sequences > self.num_beams:
                raise ValueError("num_return_sequences must be <= num_beams")

    def sequences(self) -> int:
        return self.options.num_beams

    def generate(self, model: GPTModel, request: GenerationRequest) -> list[Generated]:
        results: list[Generated] = []
        for index, prompt in enumerate(request.prompts):
            for new_ids, score in self._search(model, prompt, request):
                finish = "eos" if new_ids and request.is_eos(new_ids[-1]) else "length"
                results.append(Generated(prompt, new_ids, finish, score, index))
        return results

    def _search(
        self, model: GPTModel, prompt: list[int], req: GenerationRequest
    ) -> list[tuple[list[int], float]]:
        opts = self.options
        beams, keep = opts.num_beams, 2 * opts.num_beams
        lp = opts.length_penalty
        prompt_len, max_new = len(prompt), req.max_new_tokens
        if max_new <= 0:
            return [([], 0.0)] * opts.num_return_sequences
        decoder = Decoder(model, [prompt] * beams, max_new, compiled=req.compiled)
        device = decoder.ids.device
        vocab = model.cfg.vocab_size
        penalties = req.penalties([prompt] * beams, vocab, device)
        running = torch.full((beams,), _FLOOR, device=device)
        running[0] = 0.0  # all beams start identical: expand only the first
        done_seqs: list[Tensor | None] = [None] * beams
        done_scores = torch.full((beams,), _FLOOR, device=device)
        done = torch.zeros(beams, dtype=torch.bool, device=device)
        top_slots = torch.arange(keep, device=device) < beams
        eos = torch.tensor(req.eos_ids, device=device) if req.eos_ids else None
        improvable = True
        logits = decoder.prefill()
        history = _History(decoder.cache.shared if decoder.cache else 0, beams)
        for step in range(max_new):
            req.step_done()
            generated = step + 1  # new tokens in every candidate
            logprobs = torch.log_softmax(next_token_logits(logits, req.vocab_limit), -1)
            logprobs = penalties.apply(logprobs)  # (beams, V)
            cand_scores, flat = _top_candidates(logprobs, running, keep)
            parent = flat // logprobs.shape[-1]
            token = flat % logprobs.shape[-1]
            if generated >= max_new:
                hits = torch.ones_like(token, dtype=torch.bool)
            elif eos is not None:
                hits = torch.isin(token, eos)
            else:
                hits = torch.zeros_like(token, dtype=torch.bool)
            entering = hits & top_slots
            # Finished candidates among the first `beams` may enter the hypotheses.
            if (
                improvable
                and bool(entering.any())
                and not (opts.early_stopping == "true" and bool(done.all()))
            ):
                slots = entering.nonzero().flatten()  # the candidates that enter
                normalised = cand_scores[slots] / length_norm(generated, lp)
                merged = torch.cat([done_scores, normalised])
                real = torch.cat([done, torch.ones_like(slots, dtype=torch.bool)])
                # An empty slot loses to every hypothesis, even one whose score
                # overflowed to -inf (an extreme length_penalty), as in transformers.
                lowest = torch.finfo(merged.dtype).min
                rank = torch.where(real, merged.nan_to_num(neginf=lowest), -math.inf)
                best = torch.topk(rank, beams).indices.tolist()
                candidates = decoder.ids[parent]  # (keep, len) before the new token
                new_seqs: list[Tensor | None] = []
                for i in best:
                    if i < beams:
                        new_seqs.append(done_seqs[i])
                    else:
                        j = int(slots[i - beams])
                        new_seqs.append(torch.cat([candidates[j], token[j : j + 1]]))
                done = real[best]
                done_scores = merged[best]
                done_seqs = new_seqs
            # The best unfinished candidates continue.
            open_scores = cand_scores + hits.float() * _FLOOR
            chosen = torch.topk(open_scores, beams).indices
            running = open_scores[chosen]
            improvable = improvable and self._can_improve(
                running, done_scores, done, generated, max_new, lp
            )
            stop_now = (
                not improvable
                or (opts.early_stopping == "true" and bool(done.all()))
                or bool(hits.all())
            )
            if stop_now:
                break
            index = parent[chosen]
            order, cache = index.tolist(), decoder.cache
            start = 0 if cache is None else history.reorder(order, cache.length)
            decoder.reorder(index, start)
            if cache is not None:
                cache.shared = history.shared()
            penalties.reorder(order)
            penalties.update(token[chosen].tolist())
            logits = decoder.step(token[chosen])
        order = torch.argsort(done_scores, descending=True, stable=True)
        out = []
        for i in order[: opts.num_return_sequences].tolist():
            seq = done_seqs[i]
            new_ids = [] if seq is None else seq[prompt_len:].tolist()
            out.append((new_ids, float(done_scores[i])))
        return out

    def _can_improve(
        self,
        running: Tensor,
        done_scores: Tensor,
        done: Tensor,
        generated: int,
        max_new: int,
        lp: float,
    ) -> bool:
        """Whether the best running beam could still beat the worst hypothesis."""
        if not bool(done.all()):
            return True
        length = (
            max_new
            if (self.options.early_stopping == "never" and lp > 0)
            else generated
        )
        return bool(running[0] / length_norm(length, lp) > done_scores.min())


class _History:
    """``common[i][j]``: the leading cache slots beams ``i`` and ``j`` hold as
    copies of one computation (new positions are each beam's own; a beam that
    takes another's history holds all of its slots)."""

    def __init__(self, shared: int, beams: int) -> None:
        self.common = [[shared] * beams for _ in range(beams)]

    def reorder(self, order: list[int], length: int) -> int:
        """Row i takes old row ``order[i]``, whose ``length`` slots are filled;
        returns the slots the moved rows already hold (not to be copied)."""
        old = self.common
        start = min((old[i][j] for i, j in enumerate(order) if i != j), default=length)
        self.common = [[length if a == b else old[a][b] for b in order] for a in order]
        return start

    def shared(self) -> int:
        """The slots every beam holds the same bits in."""
        return min(map(min, self.common))


def _top_candidates(
    logprobs: Tensor, running: Tensor, keep: int
) -> tuple[Tensor, Tensor]:
    """The ``keep`` best continuations of all beams: summed log-probabilities
    (descending) and flat indices ``beam * V + token``."""
    found = sampling.beam_top(logprobs, running, keep)
    if found is not None:
        return found
    return torch.topk((logprobs + running[:, None]).view(-1), keep)


def length_norm(length: int, penalty: float) -> float:
    """``length ** penalty``, the divisor of a hypothesis's summed
    log-probability (as transformers computes it), kept finite and positive
    for any penalty: 1e308 would overflow, -1e308 underflow to zero."""
    try:
        value = length**penalty
    except OverflowError:
        return _HUGE
    return value if value > 0.0 else 1.0 / _HUGE
