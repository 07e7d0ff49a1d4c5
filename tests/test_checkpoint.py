import pickle

import pytest
import torch

from gptkit.core.checkpoints import native as ckpt_module
from gptkit.core.checkpoints.layout import list_checkpoints
from gptkit.core.checkpoints.native import (
    default_file_mode,
    load_checkpoint,
    load_trainer_state,
    save_checkpoint,
)
from gptkit.core.weights import build_model, load_weights
from gptkit.errors import GptkitError
from tests.helpers import tiny_model


def test_round_trip_keeps_logits_and_a_tied_head_once(tmp_path):
    model = tiny_model(tie_embeddings=True)
    path = save_checkpoint(tmp_path, 7, model, model.cfg, trainer_state={"step": 7})
    cfg, state, meta = load_checkpoint(path)
    assert "out_head.weight" not in state and meta["step"] == 7
    loaded = build_model(cfg, state)
    assert loaded.out_head.weight is loaded.tok_emb.weight
    ids = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded.eval()(ids))
    assert load_trainer_state(path) == {"step": 7}
    # readable like any file the user writes (safetensors creates it private)
    assert (path / "model.safetensors").stat().st_mode & 0o777 == default_file_mode()
    assert load_weights(str(tmp_path / "step-000007")).config == model.cfg


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model = tiny_model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, model.cfg, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000002",
        "step-000003",
    ]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_model()
    save_checkpoint(tmp_path, 1, model, model.cfg)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_module, "save_file", disk_full)
    with pytest.raises(GptkitError, match=r"no space left.*step-000001 is intact"):
        save_checkpoint(tmp_path, 2, model, model.cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000001"]
    load_checkpoint(tmp_path / "step-000001")


def test_truncated_weights_are_a_clear_error(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path, 1, model, model.cfg)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GptkitError, match="corrupt checkpoint weights"):
        load_checkpoint(path)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_malicious_trainer_state_is_refused_without_running_code(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path, 1, model, model.cfg, trainer_state={"step": 1})
    victim = tmp_path / "pwned"
    with open(path / "trainer_state.pt", "wb") as f:
        pickle.dump({"step": _Exploit(str(victim))}, f)
    with pytest.raises(GptkitError, match="corrupt or unsafe"):
        load_trainer_state(path)
    assert not victim.exists()
