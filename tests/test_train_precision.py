"""Precisions (mixed and bf16-true), torch.compile and the fused optimizer in
the training loop."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from gptkit.core.config import get_preset
from gptkit.core.data import make_loaders
from gptkit.core.model import GPTModel
from gptkit.core.settings import TrainSettings
from gptkit.core.training.trainer import Trainer
from gptkit.plugins.schedulers.schedules import Constant

SMALL = [
    "--preset",
    "tiny",
    "--context-length",
    "16",
    "--batch-size",
    "2",
    "--eval-freq",
    "1",
    "--eval-iter",
    "1",
    "--max-new-tokens",
    "2",
    "--logger",
    "jsonl",
]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def trainer(verdict_text, **settings) -> Trainer:
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny").replace(context_length=16))
    data = make_loaders(verdict_text, context_length=16, batch_size=2)
    return Trainer(
        model,
        data,
        TrainSettings(eval_iter=1, max_new_tokens=0, **settings),
        device=torch.device("cpu"),
        scheduler=Constant(),
    )


def test_bf16_mixed_autocasts_the_matmuls_and_keeps_fp32_weights(verdict_text):
    t = trainer(verdict_text, precision="bf16-mixed", max_steps=2, eval_freq=1)
    seen: list[tuple[bool, torch.dtype]] = []
    t.model.out_head.register_forward_hook(
        lambda module, args, out: seen.append((module.training, out.dtype))
    )
    summary = t.fit()
    assert (True, torch.bfloat16) in seen and (False, torch.bfloat16) in seen
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert summary["val_loss"] < 11.0


def test_bf16_true_computes_in_bf16_without_autocast_and_keeps_fp32_masters(
    verdict_text,
):
    t = trainer(verdict_text, precision="bf16-true", max_steps=2, eval_freq=1)
    seen: list[tuple[bool, torch.dtype, torch.dtype, bool]] = []

    def record(module, args, out):
        seen.append(
            (
                module.training,
                out.dtype,
                module.weight.dtype,  # the parameter the forward pass sees
                torch.is_autocast_enabled("cpu"),
            )
        )

    t.model.out_head.register_forward_hook(record)
    t.model.trf_blocks[0].att.W_query.register_full_backward_hook(
        lambda module, grad_in, grad_out: seen.append(("grad", grad_out[0].dtype))
    )
    summary = t.fit()
    forward = [s for s in seen if s[0] != "grad"]
    assert {(dt, w, autocast) for _, dt, w, autocast in forward} == {
        (torch.bfloat16, torch.bfloat16, False)
    }
    assert {training for training, *_ in forward} == {True, False}  # eval too
    assert ("grad", torch.bfloat16) in seen  # the backward pass runs in bf16
    # The optimizer holds and updates float32 master weights and state.
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(p.grad.dtype == torch.float32 for p in t.model.parameters())
    states = [v for s in t.optimizer.state.values() for v in s.values() if v.dim()]
    assert states and {v.dtype for v in states} == {torch.float32}
    assert summary["val_loss"] < 11.0


def test_bf16_true_master_weights_keep_updates_smaller_than_bf16_resolves(
    verdict_text,
):
    """An AdamW step of ~1e-7 is far below bf16's resolution at a weight of
    magnitude > 1e-3 (half its spacing there is >= 2^-18 ~ 3.8e-6): added to a
    bf16 weight it rounds away, so bf16 weights would not move; the float32
    master weights do."""
    t = trainer(verdict_text, precision="bf16-true", lr=1e-7, weight_decay=0.0)
    weight = t.model.trf_blocks[0].ff.layers[0].weight
    before = weight.detach().clone()
    t.train_step(iter(t.data.train_loader))
    step = weight.detach() - before
    assert 0 < step.abs().max() < 1e-6
    assert (step != 0).float().mean() > 0.5  # most float32 weights moved
    big = before.abs() > 1e-3
    stored = before.bfloat16()
    as_bf16 = (stored.float() + step).bfloat16()  # the same step on bf16 weights
    assert torch.equal(as_bf16[big], stored[big])  # lost


def test_bf16_true_losses_follow_fp32(verdict_text):
    """Same seed, same batches: bf16-true's losses stay within bf16's rounding
    of fp32's over a few steps."""
    losses = {}
    for precision in ("fp32", "bf16-true"):
        t = trainer(verdict_text, precision=precision)
        batches = iter(t.data.train_loader)
        losses[precision] = [t.train_step(batches) for _ in range(4)]
    for a, b in zip(losses["fp32"], losses["bf16-true"], strict=True):
        assert b == pytest.approx(a, abs=0.02)
    assert losses["fp32"] != losses["bf16-true"]  # it did compute in bf16


def test_fp32_uses_the_fused_adamw_where_torch_has_it(verdict_text):
    t = trainer(verdict_text)
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert t.optimizer.defaults.get("fused") is ((major, minor) >= (2, 4) or None)
    assert not t.scaler.is_enabled()


def test_fp16_mixed_resumes_exactly_with_its_grad_scaler(
    tmp_path, cli_run, verdict_path
):
    common = ["--corpus", str(verdict_path), *SMALL, "--precision", "fp16-mixed"]
    full = tmp_path / "full"
    assert (
        cli_run("train", *common, "--max-steps", "4", "--out", str(full)).exit_code == 0
    )
    part = tmp_path / "part"
    result = cli_run(
        "train", *common, "--max-steps", "4", "--checkpoint-every", "2",
        "--out", str(part),
    )  # fmt: skip
    assert result.exit_code == 0
    state = torch.load(
        part / "checkpoints" / "step-000002" / "trainer_state.pt", weights_only=True
    )
    assert state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]
    # Continue from step 2 as if the run had been killed there.
    shutil.rmtree(part / "checkpoints" / "step-000004")
    resumed = cli_run("train", "--resume", str(part))
    assert resumed.exit_code == 0, resumed.stderr
    assert rows(part / "metrics.jsonl") == rows(full / "metrics.jsonl")


def test_compile_keeps_checkpoint_keys_plain(
    tmp_path, cli_run, verdict_path, monkeypatch
):
    # The eager backend traces with TorchDynamo but skips Inductor's C++ build,
    # which takes minutes on a small CPU; the wrapping logic is the same.
    compiled: list[torch.nn.Module] = []
    real_compile = torch.compile

    def eager_compile(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    common = ["--corpus", str(verdict_path), *SMALL, "--max-steps", "2"]
    out = tmp_path / "compiled"
    result = cli_run("train", *common, "--compile", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert len(compiled) == 1
    with safe_open(
        out / "checkpoints" / "step-000002" / "model.safetensors", "pt"
    ) as f:
        keys = list(f.keys())
    assert "tok_emb.weight" in keys
    assert not [k for k in keys if k.startswith(("_orig_mod.", "module."))]
    plain = tmp_path / "plain"
    assert cli_run("train", *common, "--out", str(plain)).exit_code == 0
    for a, b in zip(
        rows(out / "metrics.jsonl"), rows(plain / "metrics.jsonl"), strict=True
    ):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_bf16_training_on_a_cpu_that_emulates_bf16_warns_in_one_line(
    verdict_text, monkeypatch
):
    from gptkit.system import cpu

    def notes(precision: str) -> list[str]:
        t = trainer(verdict_text, precision=precision, max_steps=1)
        return [m for m in t._untold or [] if "bf16 arithmetic" in m]

    monkeypatch.setattr(cpu, "has", lambda *names: False)  # an AVX2-only CPU
    for precision in ("bf16-mixed", "bf16-true"):
        (line,) = notes(precision)
        assert precision in line and "\n" not in line and "fp32" in line
    assert notes("fp32") == []
    monkeypatch.setattr(cpu, "has", lambda *names: "avx512_bf16" in names)
    assert notes("bf16-mixed") == []
