"""native checkpoints (and every loader through build_model): the caller's
dtype and device, one copy of the weights, and --dtype in gptkit eval."""

from __future__ import annotations

import json

import pytest
import torch

from gptkit.core.checkpoints.native import save_checkpoint
from gptkit.core.loading import model_from_spec
from gptkit.core.weights import build_model, load_weights
from tests.helpers import tiny_model


def ids() -> torch.Tensor:
    return torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [(torch.float32, 0.0), (torch.bfloat16, 0.02), (torch.float16, 0.003)],
)
def test_a_run_loads_in_the_requested_dtype(tmp_path, dtype, tolerance):
    model = tiny_model(seed=6, tie_embeddings=True)
    save_checkpoint(tmp_path / "run" / "checkpoints", 3, model, model.cfg)
    loaded_model, loaded = model_from_spec(str(tmp_path / "run"), dtype=dtype)
    assert {p.dtype for p in loaded_model.parameters()} == {dtype}
    assert loaded_model.out_head.weight is loaded_model.tok_emb.weight
    # loaded.state_dict is the model's own tensors, not a second copy
    assert loaded.state_dict["tok_emb.weight"].data_ptr() == (
        loaded_model.tok_emb.weight.data_ptr()
    )
    with torch.no_grad():
        expected = model(ids())
        got = loaded_model(ids()).float()
    # relative to the largest logit: bf16 keeps ~3 significant digits, fp16 ~4
    assert (got - expected).abs().max() <= tolerance * expected.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_run_loads_on_cuda(tmp_path):
    model = tiny_model(seed=6)
    save_checkpoint(tmp_path / "run" / "checkpoints", 3, model, model.cfg)
    loaded_model, _ = model_from_spec(
        str(tmp_path / "run"), device="cuda", dtype=torch.bfloat16
    )
    assert {p.device.type for p in loaded_model.parameters()} == {"cuda"}
    with torch.no_grad():
        got = loaded_model(ids().cuda()).float().cpu()
        expected = model(ids())
        assert (got - expected).abs().max() <= 0.02 * expected.abs().max()


def test_consume_frees_the_loaders_tensors(tmp_path):
    model = tiny_model(seed=7)
    save_checkpoint(tmp_path / "run" / "checkpoints", 3, model, model.cfg)
    loaded = load_weights(str(tmp_path / "run"))
    state = loaded.state_dict
    half = build_model(loaded.config, state, dtype=torch.float16, consume=True)
    assert state == {}  # each fp32 original was released as it was cast
    assert half.tok_emb.weight.dtype == torch.float16
    again = load_weights(str(tmp_path / "run")).state_dict
    kept = dict(again)
    build_model(loaded.config, again, dtype=torch.float16)
    assert again.keys() == kept.keys()  # without consume the caller's dict stays


def test_eval_has_a_dtype_option(tmp_path, cli_run):
    model = tiny_model(seed=8)
    save_checkpoint(tmp_path / "run" / "checkpoints", 3, model, model.cfg)
    losses = {}
    for dtype in ("fp32", "bf16"):
        result = cli_run(
            "eval",
            "--weights",
            str(tmp_path / "run"),
            "--corpus",
            "the-verdict",
            "--eval-iter",
            "2",
            "--dtype",
            dtype,
            "--json",
        )
        assert result.exit_code == 0, result.stderr
        losses[dtype] = json.loads(result.stdout)["val_loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.05)
    assert losses["bf16"] != losses["fp32"]  # it really ran in bf16
