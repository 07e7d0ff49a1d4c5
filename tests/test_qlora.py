"""QLoRA: LoRA adapters trained in float over a frozen int8/int4 base; the
checkpoints hold the adapters only, the run records the quantizer, and
``--weights RUN`` quantizes the base again, merges, and generates."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_clean_error


@pytest.fixture(scope="module")
def qlora_run(base_and_data, tmp_path_factory):
    import gptkit

    base, data = base_and_data
    out = tmp_path_factory.mktemp("runs") / "qlora"
    return gptkit.finetune(
        weights=base, n_heads=2, data=str(data), lora="r=4,alpha=8",
        quantize="int8:backend=torch", lr=1e-2, max_steps=6, eval_freq=2, eval_iter=2,
        test_responses=1, response_tokens=8, loggers=["jsonl"], out=str(out),
    )  # fmt: skip


def test_qlora_trains_and_checkpoints_only_the_adapters(qlora_run, base_and_data):
    from safetensors.torch import load_file

    evals = qlora_run.evals
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.05
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] - 0.05
    tensors = load_file(qlora_run.checkpoints[-1] / "model.safetensors")
    assert tensors and all(k.endswith((".lora_A", ".lora_B")) for k in tensors)
    assert len(tensors) == 2 * (2 * 6 + 1)  # 12 block layers and the untied head
    meta = json.loads((qlora_run.checkpoints[-1] / "config.json").read_text())
    assert meta["adapter"]["quantize"] == "int8:backend=torch"
    assert meta["adapter"]["base"] == base_and_data[0]
    config = json.loads((qlora_run.dir / "config.json").read_text())
    assert config["adapter"] == meta["adapter"]
    assert config["settings"]["quantize"] == "int8:backend=torch"
    assert len(qlora_run.responses) == 1


def test_a_qlora_run_loads_merged_over_its_quantized_base(qlora_run, base_and_data):
    """--weights RUN: the base quantized again as recorded, the adapters merged
    into its dequantized weights: the logits of the model that was trained."""
    import torch
    from safetensors.torch import load_file

    import gptkit
    from gptkit.formats.adapters import (
        apply_adapter,
        get_adapter,
        is_adapted,
        quantize_base,
    )
    from gptkit.formats.models import model_from_spec

    merged = gptkit.load(str(qlora_run.dir), device="cpu")
    assert not is_adapted(merged.model) and merged.prompt_style.name == "alpaca"
    tensors = load_file(qlora_run.checkpoints[-1] / "model.safetensors")
    ids = torch.tensor([[464, 3290, 318, 257, 1332, 13] * 4])

    def adapted(quantize: bool) -> torch.Tensor:
        model, _ = model_from_spec(base_and_data[0], hints={"n_heads": 2})
        if quantize:
            quantize_base(model, "int8:backend=torch")
        apply_adapter(model, get_adapter("r=4,alpha=8"))
        model.load_state_dict(tensors, strict=False)
        model.eval()
        with torch.no_grad():
            return model(ids)

    with torch.no_grad():
        got = merged.model(ids)
    trained = adapted(quantize=True)
    assert (got - trained).abs().max().item() <= 1e-4
    # It is the quantized base that the adapters were trained on, not the float one.
    assert (adapted(quantize=False) - trained).abs().max().item() > 1e-3
    text = merged.generate("Name a color.", max_new_tokens=5)
    assert isinstance(text, str)


def test_qlora_int4_on_the_command_line(base_and_data, tmp_path, cli_run):
    base, data = base_and_data
    out = tmp_path / "q4"
    result = cli_run(
        "finetune", "--weights", base, "--n-heads", "2", "--data", str(data),
        "--lora", "r=2,alpha=4", "--quantize", "int4:group_size=32",
        "--max-steps", "2", "--eval-freq", "1", "--eval-iter", "1",
        "--test-responses", "0", "--start-context", "", "--logger", "console",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the base (" in result.stdout
    assert "quantized to int4:group_size=32" in result.stdout
    # Its trainable share is of the model's parameters, not of its float ones.
    assert "of 6.7M parameters train" in result.stdout, result.stdout
    meta = json.loads((out / "config.json").read_text())
    assert meta["adapter"]["quantize"] == "int4:group_size=32"


def test_qlora_faults_are_one_line(base_and_data, tmp_path, cli_run):
    base, data = base_and_data
    common = ["finetune", "--data", str(data), "--n-heads", "2", "--weights", base]
    cases = {
        ("--quantize", "int8"): "--quantize quantizes the frozen base of a LoRA run",
        ("--lora", "r=2", "--quantize", "int3"): "--quantize int3",
        ("--lora", "r=2", "--quantize", "int4:group_size=128"): "group_size 128",
    }
    for args, message in cases.items():
        out = tmp_path / "run"
        result = cli_run(*common, *args, "--out", str(out))
        assert_clean_error(result, message)
        assert not out.exists()


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_gradients_reach_the_input_of_a_quantized_layer(kind):
    """The kernels have no backward pass: with a gradient wanted, a quantized
    layer multiplies by its dequantized weight, recomputed in the backward."""
    import torch
    from torch import nn

    from gptkit.plugins.quantizers.linear import Int4Linear, Int8Linear

    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    if kind == "int8":
        layer = Int8Linear.from_linear(linear)
    else:
        layer = Int4Linear.from_linear(linear, 32)
    dense = nn.Linear(64, 32)
    with torch.no_grad():
        dense.weight.copy_(layer.dequantized_weight())
        dense.bias.copy_(layer.bias)
    for rows in (1, 40):  # a decoding-sized input would take a kernel otherwise
        x = torch.randn(rows, 64, requires_grad=True)
        y = layer(x)
        (y.square().sum()).backward()
        want_x = x.detach().clone().requires_grad_(True)
        dense(want_x).square().sum().backward()
        assert torch.allclose(y, dense(x), atol=1e-5)
        assert torch.allclose(x.grad, want_x.grad, atol=1e-4)


def test_measuring_the_kernels_leaves_the_global_rng_alone():
    """The auto backend times each shape once, perhaps mid-training: the data
    order (the global RNG) must not depend on whether it was cached."""
    import torch

    from gptkit.plugins.quantizers.linear import timing_layers

    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    (layers,) = timing_layers("int8", 32, 64, 0, ["torch", "reference"])
    assert torch.equal(torch.rand(4), want)
    assert set(layers) == {"torch", "reference"}
