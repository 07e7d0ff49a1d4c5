"""LoRA finetuning: frozen base, adapter-only checkpoints that reference their
base, merging on load and on export (same logits), faults in one line."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def lora_run(base_and_data, tmp_path_factory):
    import gptkit

    base, data = base_and_data
    out = tmp_path_factory.mktemp("runs") / "lora"
    gptkit.finetune(
        weights=base, n_heads=2, data=str(data), lora="r=4,alpha=8",
        lr=1e-2, max_steps=4, test_responses=1, loggers=["jsonl"], out=str(out),
    )  # fmt: skip
    return out


def test_lora_checkpoints_hold_only_the_adapters_and_their_base(
    lora_run, base_and_data
):
    from safetensors.torch import load_file

    ckpt = sorted((lora_run / "checkpoints").iterdir())[-1]
    tensors = load_file(ckpt / "model.safetensors")
    assert tensors and all(k.endswith((".lora_A", ".lora_B")) for k in tensors)
    # Every linear layer (2 blocks x 6, and the untied head) has an adapter.
    assert len(tensors) == 2 * (2 * 6 + 1)
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["adapter"]["name"] == "lora"
    assert meta["adapter"]["options"]["r"] == 4
    assert meta["adapter"]["base"] == base_and_data[0]
    trainable = sum(t.numel() for t in tensors.values())
    assert meta["adapter"]["trainable_parameters"] == trainable
    config = json.loads((lora_run / "config.json").read_text())
    assert config["adapter"] == meta["adapter"]


def test_a_lora_run_loads_merged_with_the_adapted_models_logits(
    lora_run, base_and_data
):
    import torch
    from safetensors.torch import load_file

    import gptkit
    from gptkit.formats.adapters import apply_adapter, get_adapter, is_adapted
    from gptkit.formats.models import model_from_spec

    merged = gptkit.load(str(lora_run), device="cpu")
    assert not is_adapted(merged.model) and merged.prompt_style.name == "alpaca"
    adapted, _ = model_from_spec(base_and_data[0], hints={"n_heads": 2})
    base_logits_input = torch.tensor([[464, 3290, 318, 257, 1332, 13]])
    with torch.no_grad():
        before = adapted(base_logits_input)
    apply_adapter(adapted, get_adapter("r=4,alpha=8"))
    ckpt = sorted((lora_run / "checkpoints").iterdir())[-1]
    adapted.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
    adapted.eval()
    with torch.no_grad():
        want = adapted(base_logits_input)
        got = merged.model(base_logits_input)
    assert (got - want).abs().max().item() <= 1e-5
    assert (want - before).abs().max().item() > 1e-3  # the adapters learned


def test_export_merge(lora_run, tmp_path, cli_run):
    import torch

    import gptkit

    refused = cli_run("export", "--weights", str(lora_run), str(tmp_path / "a"))
    assert refused.exit_code == 2
    assert "holds LoRA adapters only" in refused.stderr and "--merge" in refused.stderr
    assert not (tmp_path / "a").exists()
    done = cli_run("export", "--weights", str(lora_run), "--merge", str(tmp_path / "b"))
    assert done.exit_code == 0, done.output
    exported = gptkit.load(f"hf:{tmp_path / 'b'}", device="cpu")
    merged = gptkit.load(str(lora_run), device="cpu")
    ids = torch.tensor([[464, 3290, 318, 257]])
    with torch.no_grad():
        assert (exported.model(ids) - merged.model(ids)).abs().max().item() <= 1e-5


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


RANK = "option r of adapter lora must be >= 1"


def test_lora_faults_are_one_line(base_and_data, tmp_path, cli_run):
    base, data = base_and_data
    common = ["finetune", "--data", str(data), "--n-heads", "2"]
    cases = {
        ("--weights", base, "--lora", "r=0"): RANK,
        ("--weights", base, "--lora", "r=-2,alpha=4"): RANK,
        ("--weights", base, "--lora", "r=4,targets=W_qkv"): (
            "no linear layer is called 'W_qkv'"
        ),
        ("--weights", base, "--lora", "rank=4"): "unknown option",
        ("--weights", base, "--lora", "dora:r=4"): "unknown adapter 'dora'",
        ("--preset", "tiny", "--lora", "r=4"): "--lora adapts pretrained weights",
    }
    for args, message in cases.items():
        out = tmp_path / f"run{len(cases)}"
        result = cli_run(*common, *args, "--out", str(out))
        assert message in one_line_error(result), args
        assert not out.exists()
    merge = cli_run("export", "--weights", base, "--n-heads", "2", "--merge",
                    str(tmp_path / "x"))  # fmt: skip
    assert "holds no LoRA adapters to merge" in one_line_error(merge)


def test_targets_choose_layers(base_and_data, tmp_path):
    import gptkit

    base, data = base_and_data
    run = gptkit.finetune(
        weights=base, n_heads=2, data=str(data), max_steps=1, test_responses=0,
        lora="r=2,alpha=2,targets=W_query+W_value", loggers=["jsonl"],
        out=str(tmp_path / "r"),
    )  # fmt: skip
    from safetensors.torch import load_file

    tensors = load_file(run.checkpoints[-1] / "model.safetensors")
    layers = sorted({k.rsplit(".", 1)[0] for k in tensors})
    assert layers == [
        "trf_blocks.0.att.W_query", "trf_blocks.0.att.W_value",
        "trf_blocks.1.att.W_query", "trf_blocks.1.att.W_value",
    ]  # fmt: skip


def test_preflight_counts_only_the_adapters_state():
    from gptkit.core.config import get_preset
    from gptkit.formats.adapters import get_adapter, trainable_count
    from gptkit.runs.preflight import training_estimate

    cfg = get_preset("gpt2-124m")
    trainable = trainable_count(cfg, get_adapter("r=16,alpha=16"))
    # 12 blocks x (4 x r(768+768) + 2 x r(768+3072)), and the book's GPT-2
    # has an untied head: r(768 + 50257).
    assert trainable == 12 * 16 * (4 * 1536 + 2 * 3840) + 16 * (768 + 50257)
    full = training_estimate(cfg, batch_size=8).total
    lora = training_estimate(cfg, batch_size=8, trainable=trainable).total
    assert full - lora == pytest.approx(12 * cfg.num_parameters() - 16 * trainable)
