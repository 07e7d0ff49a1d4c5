"""Speculative decoding: greedy output identical to the model's greedy output,
sampled output distributed as the model's (chi-square), caches that roll back,
clear errors."""

from __future__ import annotations

import pytest
import torch

from gptkit.core.config import get_preset
from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel
from gptkit.core.registry import get_registry
from gptkit.errors import GptkitError
from gptkit.plugins.samplers.speculative import Speculative
from tests.trained_models import draft_model, split_ids, target_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models():
    return target_model(), draft_model()


def _prompts(n: int, length: int) -> list[list[int]]:
    held_out = split_ids()[1]
    return [held_out[i * 37 : i * 37 + length].tolist() for i in range(n)]


def _run(model, sampler, prompts, n, **kw):
    out = generate_tokens(model, prompts, sampler, max_new_tokens=n, **kw)
    return [r.new_ids for r in out]


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 4])
def test_greedy_is_the_models_greedy(models, k):
    target, draft = models
    prompts = _prompts(20, 6)
    greedy = get_registry().samplers.create("greedy")
    expected = _run(target, greedy, prompts, 30, eos_id=None)
    spec = Speculative.with_draft(draft, k=k)
    assert _run(target, spec, prompts, 30, eos_id=None) == expected
    stats = spec.stats()
    assert stats["emitted"] == 20 * 30
    assert 0.0 < stats["acceptance_rate"] <= 1.0
    assert stats["tokens_per_round"] > 1.0  # the draft saves model passes


@pytest.mark.slow
def test_greedy_past_the_context_continues_plainly(models):
    """Prompt + new tokens beyond the 64-token context: the engine's sliding
    window takes over, still the model's greedy output."""
    target, draft = models
    prompts = _prompts(3, 50)
    greedy = get_registry().samplers.create("greedy")
    expected = _run(target, greedy, prompts, 30, eos_id=None)
    assert _run(
        target, Speculative.with_draft(draft, k=4), prompts, 30, eos_id=None
    ) == (expected)


def test_stops_at_end_of_text_and_streams(models):
    target, draft = models
    prompt = _prompts(1, 6)
    greedy = get_registry().samplers.create("greedy")
    [reference] = _run(target, greedy, prompt, 12, eos_id=None)
    eos = reference[5]
    streamed: list[int] = []
    out = generate_tokens(
        target,
        prompt,
        Speculative.with_draft(draft, k=3),
        max_new_tokens=12,
        eos_id=eos,
        on_token=lambda row, token: streamed.append(token),
    )
    assert out[0].new_ids == reference[: reference.index(eos) + 1]
    assert out[0].finish_reason == "eos"
    assert streamed == out[0].new_ids


def _small(seed: int, layers: int) -> GPTModel:
    torch.manual_seed(seed)
    cfg = get_preset("tiny").replace(
        vocab_size=6, emb_dim=16, n_heads=2, n_layers=layers, context_length=16
    )
    model = GPTModel(cfg).eval()
    with torch.no_grad():  # sharper, different distributions
        model.out_head.weight.mul_(3.0)
    return model


@pytest.mark.slow
def test_sampled_tokens_follow_the_models_distribution():
    """Pearson's chi-square on the joint distribution of the first two tokens
    (6 x 6 cells), 2,000 generations; the exact probabilities come from the
    model itself (with temperature and top-k: the warpers apply to both
    models). k=2 exercises acceptance, the residual draw and the bonus."""
    from gptkit.plugins.samplers.warpers import warp

    options = {"temperature": 0.8, "top_k": 4}
    target, draft = _small(0, 2), _small(1, 1)
    prompt = [1, 2, 3]

    def dist(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = target(torch.tensor([ids]))[:, -1].float()
        warped = warp(logits, temp=options["temperature"], k=options.get("top_k"))
        return torch.softmax(warped, -1)[0].double()

    first = dist(prompt)
    joint = torch.stack([first[a] * dist([*prompt, a]) for a in range(6)])  # (6, 6)
    spec = Speculative.with_draft(draft, k=2, **options)
    g = torch.Generator().manual_seed(7)
    runs = 2000
    counts = torch.zeros(6, 6, dtype=torch.float64)
    for _ in range(runs):
        out = generate_tokens(
            target, [prompt], spec, max_new_tokens=2, eos_id=None, generator=g
        )
        a, b = out[0].new_ids
        counts[a, b] += 1
    expected = joint * runs
    assert counts[expected == 0].sum() == 0  # filtered tokens never appear
    big = expected >= 5
    rest_obs, rest_exp = counts[~big].sum(), expected[~big].sum()
    chi2 = float(((counts[big] - expected[big]) ** 2 / expected[big]).sum())
    cells = int(big.sum())
    if rest_exp >= 5:
        chi2 += float((rest_obs - rest_exp) ** 2 / rest_exp)
        cells += 1
    dof = cells - 1
    # 99.9% quantile of chi-square (Wilson-Hilferty approximation, z = 3.09)
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * (2 / (9 * dof)) ** 0.5) ** 3
    assert chi2 < critical, (chi2, dof)
    assert spec.stats()["acceptance_rate"] < 1.0  # rejections were exercised


def test_needs_a_draft_and_no_penalties(models):
    target, draft = models
    with pytest.raises(GptkitError, match="draft=SPEC"):
        generate_tokens(target, [[1, 2]], Speculative(), max_new_tokens=3)
    with pytest.raises(GptkitError, match="repetition_penalty"):
        generate_tokens(
            target,
            [[1, 2]],
            Speculative.with_draft(draft),
            max_new_tokens=3,
            repetition_penalty=1.2,
        )


def test_draft_loads_from_a_weights_spec(models, tmp_path):
    from gptkit.core.checkpoints.native import save_checkpoint

    target, draft = models
    ckpt = save_checkpoint(tmp_path / "draft", 1, draft, draft.cfg)
    spec = get_registry().samplers.create("speculative", {"draft": str(ckpt), "k": "3"})
    prompts = _prompts(2, 6)
    greedy = get_registry().samplers.create("greedy")
    assert _run(target, spec, prompts, 10, eos_id=None) == _run(
        target, greedy, prompts, 10, eos_id=None
    )
