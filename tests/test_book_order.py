"""The book's data order: the same batches and the same global-RNG draws as the
book's ``DataLoader(shuffle=True)``, so gptkit reproduces its printed losses."""

from __future__ import annotations

import pytest
import torch

from gptkit.core.order import BookOrderSampler


def test_same_batches_and_rng_draws_as_a_shuffled_dataloader():
    data = list(range(23))
    torch.manual_seed(5)
    reference = torch.utils.data.DataLoader(
        data, batch_size=2, shuffle=True, drop_last=True
    )
    expected = [b.tolist() for _ in range(3) for b in reference]
    after = torch.rand(1)
    torch.manual_seed(5)
    ours = torch.utils.data.DataLoader(
        data, batch_size=2, sampler=BookOrderSampler(len(data)), drop_last=True
    )
    assert [b.tolist() for _ in range(3) for b in ours] == expected
    assert torch.equal(torch.rand(1), after)  # the global RNG advanced alike


def test_replay_continues_a_pass_without_drawing():
    sampler = BookOrderSampler(10)
    torch.manual_seed(0)
    full = list(sampler)
    seed = sampler.seed
    state = torch.get_rng_state()
    sampler.replay(seed, 4)
    assert len(sampler) == 6
    assert list(sampler) == full[4:]
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.slow
def test_book_training_losses_are_the_books(cli_run, verdict_path, tmp_path):
    """The book prints ``Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933``
    and ``Ep 1 (Step 000005): Train loss 8.111, Val loss 8.339``."""
    result = cli_run(
        "train", "--corpus", str(verdict_path), "--preset", "gpt2-124m",
        "--context-length", "256", "--epochs", "10", "--batch-size", "2",
        "--lr", "4e-4", "--weight-decay", "0.1", "--eval-freq", "5", "--eval-iter", "5",
        "--seed", "123", "--max-steps", "6", "--logger", "console",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933" in result.output
    assert "Ep 1 (Step 000005): Train loss 8.111, Val loss 8.339" in result.output
