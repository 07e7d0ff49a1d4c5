import pytest
import torch

from gptkit.core.config import PRESETS, GPTConfig, get_preset
from gptkit.core.model import GPTModel
from gptkit.errors import GptkitError


def test_gpt2_family_sizes():
    expected = {
        "gpt2-124m": (768, 12, 12),
        "gpt2-355m": (1024, 24, 16),
        "gpt2-774m": (1280, 36, 20),
        "gpt2-1558m": (1600, 48, 25),
    }
    for name, (emb, layers, heads) in expected.items():
        cfg = get_preset(name)
        assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads) == (emb, layers, heads)
        assert cfg.context_length == 1024 and cfg.vocab_size == 50257


def test_book_124m_parameter_count():
    # The book: 163,009,536 parameters untied, 124,412,160 without the output head.
    cfg = PRESETS["gpt2-124m"]
    assert cfg.num_parameters() == 163_009_536
    assert cfg.replace(tie_embeddings=True).num_parameters() == 124_412_160


@pytest.mark.parametrize("name", ["tiny", "mini"])
def test_num_parameters_matches_the_model(name):
    cfg = PRESETS[name]
    for tied in (False, True):
        for bias in (False, True):
            c = cfg.replace(tie_embeddings=tied, qkv_bias=bias)
            with torch.device("meta"):
                model = GPTModel(c)
            assert sum(p.numel() for p in model.parameters()) == c.num_parameters()


def test_overrides_and_validation():
    cfg = get_preset("tiny").replace(context_length=32, n_heads=None)
    assert cfg.context_length == 32 and cfg.n_heads == 2
    with pytest.raises(GptkitError, match="divisible"):
        GPTConfig(emb_dim=10, n_heads=3)
    with pytest.raises(GptkitError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(GptkitError, match="unknown model setting"):
        GPTConfig.from_dict({"emb_dim": 8, "colour": 1})
