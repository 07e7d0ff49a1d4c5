"""Sharded checkpoints in one process (torch.distributed.checkpoint without a
process group), activation checkpointing, and how a run's position maps onto
another number of processes. The multi-process behaviour is in test_fsdp.py."""

from __future__ import annotations

import pickle

import pytest
import torch

from gptkit.core.checkpoints.layout import (
    SHARDED,
    is_sharded_checkpoint,
    latest_checkpoint,
)
from gptkit.core.checkpoints.native import load_checkpoint
from gptkit.core.checkpoints.sharded import load_consolidated
from gptkit.core.config import get_preset
from gptkit.core.data import make_loaders
from gptkit.core.model import GPTModel
from gptkit.core.settings import TrainSettings
from gptkit.core.training.state import position_for_world
from gptkit.core.training.trainer import Trainer
from gptkit.errors import GptkitError
from gptkit.plugins.schedulers.schedules import Constant


def trainer(verdict_text, run_dir=None, tie=False, drop=0.0, **settings) -> Trainer:
    torch.manual_seed(0)
    cfg = get_preset("tiny").replace(
        context_length=16, tie_embeddings=tie, drop_rate=drop
    )
    data = make_loaders(verdict_text, context_length=16, batch_size=2)
    return Trainer(
        GPTModel(cfg),
        data,
        TrainSettings(eval_iter=1, eval_freq=2, max_new_tokens=0, **settings),
        device=torch.device("cpu"),
        scheduler=Constant(),
        run_dir=run_dir,
    )


@pytest.mark.parametrize("tie", [False, True])
def test_an_fsdp_run_alone_writes_sharded_checkpoints_that_resume_exactly(
    tmp_path, verdict_text, tie
):
    full = trainer(verdict_text, tmp_path / "full", tie, strategy="fsdp", max_steps=4)
    full.fit()
    part = trainer(
        verdict_text, tmp_path / "part", tie, strategy="fsdp", max_steps=4,
        checkpoint_every=2,
    )  # fmt: skip
    part.fit()
    ckpt = tmp_path / "part" / "checkpoints" / "step-000002"
    assert is_sharded_checkpoint(ckpt) and not (ckpt / "model.safetensors").exists()
    assert latest_checkpoint(tmp_path / "part" / "checkpoints").name == "step-000004"

    resumed = trainer(
        verdict_text, tmp_path / "resumed", tie, strategy="fsdp", max_steps=4
    )
    resumed.restore(ckpt)
    assert resumed.step == 2
    resumed.fit()
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)  # bitwise: weights, AdamW state and position
    # Read back as whole weights, the way generate/eval/export load a run.
    last = tmp_path / "full" / "checkpoints" / "step-000004"
    cfg, weights, meta = load_checkpoint(last)
    assert meta["sharded"] is True and cfg == full.cfg
    expected = dict(full.model.state_dict())
    if tie:
        expected.pop("out_head.weight")
    assert weights.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(weights[key], tensor), key


def test_a_native_checkpoint_resumes_in_a_run_switched_to_fsdp(tmp_path, verdict_text):
    """--strategy may change on resume: the checkpoint's format is read from it."""
    full = trainer(verdict_text, tmp_path / "full", max_steps=4)
    full.fit()
    part = trainer(verdict_text, tmp_path / "part", max_steps=2)
    part.fit()
    ckpt = tmp_path / "part" / "checkpoints" / "step-000002"
    assert (ckpt / "model.safetensors").is_file()
    switched = trainer(verdict_text, tmp_path / "part", strategy="fsdp", max_steps=4)
    switched.restore(ckpt)
    switched.fit()
    assert is_sharded_checkpoint(tmp_path / "part" / "checkpoints" / "step-000004")
    for a, b in zip(full.model.parameters(), switched.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_metadata_that_would_run_code_is_refused(tmp_path, verdict_text):
    t = trainer(verdict_text, tmp_path / "run", strategy="fsdp", max_steps=1)
    t.fit()
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (ckpt / SHARDED / ".metadata").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(GptkitError, match=r"corrupt sharded checkpoint .*refusing"):
        load_consolidated(ckpt, t.cfg)
    assert not marker.exists()


def test_activation_checkpointing_recomputes_the_same_step_keeping_less(
    verdict_text,
):
    """Dropout on: the recomputation replays the random state, so the losses
    are the ones without recomputation; of what the transformer blocks' forward
    passes save for the backward pass, almost nothing is kept."""

    def run(precision: str, checkpointing: bool) -> tuple[list[float], int]:
        t = trainer(
            verdict_text,
            drop=0.1,
            precision=precision,
            activation_checkpointing=checkpointing,
        )
        inside, kept = [False], [0]
        for block in t.model.trf_blocks:
            block.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
            block.register_forward_hook(lambda *_: inside.__setitem__(0, False))

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if inside[0]:
                kept[0] += tensor.numel() * tensor.element_size()
            return tensor

        torch.manual_seed(1)
        batches = iter(t.data.train_loader)
        losses = [t.train_step(batches)]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            losses.append(t.train_step(batches))
        return losses, kept[0]

    for precision in ("fp32", "bf16-true"):
        plain, plain_bytes = run(precision, False)
        recomputed, recomputed_bytes = run(precision, True)
        assert recomputed == plain
        assert plain_bytes > 0 and recomputed_bytes < 0.1 * plain_bytes


STATE = {"world_size": 2, "settings": {"grad_accum": 1}, "batch_in_epoch": 3}


@pytest.mark.parametrize(
    ("state", "world", "expected"),
    [
        (STATE, 2, (1, 3)),  # same processes: unchanged
        (STATE, 1, (2, 6)),  # one process accumulates the two's batches
        (
            {
                **STATE,
                "world_size": 1,
                "settings": {"grad_accum": 4},
                "batch_in_epoch": 8,
            },
            2,
            (2, 4),
        ),
        ({**STATE, "world_size": 4, "batch_in_epoch": 2}, 2, (2, 4)),
    ],
)
def test_a_run_continues_at_another_process_count_with_its_global_batch(
    state, world, expected
):
    position = position_for_world(
        state, world_size=world, batch_size=2, book_order=False
    )
    assert (position.grad_accum, position.batch_in_epoch) == expected
    assert (position.note is None) == (world == state["world_size"])


@pytest.mark.parametrize(
    ("state", "kwargs", "fragment"),
    [
        (STATE, {"world_size": 3, "batch_size": 2}, "divides 2"),
        ({**STATE, "batch_size": 4}, {"world_size": 1, "batch_size": 2}, "cannot"),
        (STATE, {"world_size": 1, "batch_size": 2, "book_order": True}, "seeded"),
    ],
)
def test_a_global_batch_that_cannot_be_kept_is_refused(state, kwargs, fragment):
    kwargs = {"book_order": False, **kwargs}
    with pytest.raises(GptkitError, match=fragment):
        position_for_world(state, **kwargs)
