"""Finetuning a model of another family with its own tokenizer (a tiny Llama
and Qwen3 written by transformers, with a tokenizer.json built here): the
records are encoded by that tokenizer, batches are padded with its
end-of-sequence id, responses stop at its end-of-sequence ids, and the chat
template its tokenizer_config.json carries is the default prompt style."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO, train_byte_bpe

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SHARED = REPO.parent / "shared" / "data" / "instruction-data.json"
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
#: A Llama-3-like chat template: BOS, then "role: content<|eot_id|>" turns.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def write_checkpoint(path, family: str, text: str, template: str | None):
    """A tiny causal LM of ``family`` and its BPE tokenizer (BOS added to every
    encoding, as Llama 3's is), ending a sequence at <|end_of_text|> or
    <|eot_id|>."""
    from tokenizers import processors

    tok = train_byte_bpe(text, SPECIALS, 400)
    bos, eos, eot = (tok.token_to_id(t) for t in SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A", special_tokens=[(SPECIALS[0], bos)]
    )
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    config = {"bos_token": SPECIALS[0], "eos_token": SPECIALS[1]}
    if template is not None:
        config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    shape = dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=bos, eos_token_id=[eos, eot],
    )  # fmt: skip
    torch.manual_seed(0)
    if family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
    else:
        cfg = transformers.Qwen3Config(**shape, head_dim=16, tie_word_embeddings=True)
        model = transformers.Qwen3ForCausalLM(cfg)
    model.eval().save_pretrained(path)
    return tok


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    if not SHARED.is_file():
        pytest.skip(f"the book's instruction data is not at {SHARED}")
    rows = json.loads(SHARED.read_text())[:40]
    path = tmp_path_factory.mktemp("data") / "small.json"
    path.write_text(json.dumps(rows))
    return path, rows


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def checkpoint(request, tmp_path_factory, records):
    text = "\n\n".join(
        f"{r['instruction']} {r['input']} {r['output']}" for r in records[1]
    )
    path = tmp_path_factory.mktemp(request.param) / "m"
    write_checkpoint(path, request.param, text * 3, TEMPLATE)
    return path


def test_records_are_encoded_by_the_models_tokenizer(checkpoint, records):
    from gptkit.formats.hf_tokenizer import HFTokenizer
    from gptkit.formats.instruction_batches import (
        InstructionCollator,
        InstructionDataset,
        pad_id,
    )
    from gptkit.formats.instructions import parse_record, prompt_and_response
    from gptkit.runs.finetune import resolve_style

    tok = HFTokenizer(checkpoint / "tokenizer.json")
    style = resolve_style(None, None, tok)
    assert style.name == "chat-template"  # the tokenizer carries one
    record = parse_record(records[1][0])
    dataset = InstructionDataset([record], style, 500, tok)
    n_prompt, ids = dataset[0]
    prompt, response = prompt_and_response(style, record)
    assert prompt.startswith(SPECIALS[0])  # the template writes BOS ...
    assert ids == tok.encode(prompt + response)  # ... and it is not doubled
    assert ids[0] == tok.bos_id and ids[1] != tok.bos_id
    assert n_prompt == len(tok.encode(prompt))
    # generation encodes a chat prompt the same way: one BOS
    assert tok.encode(prompt)[:2] == ids[:2]
    assert tok.encode("plain text")[0] == tok.bos_id  # added where not written
    eos, eot = tok.eos_ids
    assert ids[-1] == eot  # the template's end of turn closes the reply
    # Batches are padded with the tokenizer's first EOS; the end of turn inside
    # the text stays a target even where it were the padding id.
    pad = pad_id(tok)
    assert pad == eos
    short = (3, ids[:5])
    inputs, targets = InstructionCollator(pad_token_id=pad)([(n_prompt, ids), short])
    assert inputs[1, 5:].eq(pad).all()
    assert targets[1, 4].item() == pad and targets[1, 5:].eq(-100).all()
    assert targets[0, : len(ids) - 1].tolist() == ids[1:]


def test_finetuning_a_model_with_its_own_tokenizer(checkpoint, records, tmp_path):
    import gptkit

    run = gptkit.finetune(
        weights=f"hf:{checkpoint}", data=str(records[0]), lr=3e-3, batch_size=4,
        max_steps=6, eval_freq=2, eval_iter=2, test_responses=2,
        response_tokens=12, loggers=["jsonl"], out=str(tmp_path / "run"),
    )  # fmt: skip
    config = json.loads((run.dir / "config.json").read_text())
    assert config["prompt_style"]["name"] == "chat-template"
    assert config["prompt_style"]["options"]["template"] == TEMPLATE
    assert config["tokenizer"] == str((checkpoint / "tokenizer.json").resolve())
    evals = run.evals
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    responses = run.responses
    assert len(responses) == 2
    for row in responses:  # decoded by the model's tokenizer, stopped at its EOS
        assert isinstance(row["model_response"], str)
        assert SPECIALS[1] not in row["model_response"]
    lm = gptkit.load(str(run.dir), device="cpu")
    assert lm.prompt_style.name == "chat-template"
    assert lm.tokenizer.spec == config["tokenizer"]
    assert isinstance(
        lm.chat([{"role": "user", "content": "Name a color."}], max_new_tokens=4), str
    )


def test_responses_stop_at_any_of_the_tokenizers_eos_ids(
    checkpoint, records, monkeypatch
):
    """respond() encodes the prompt with the model's tokenizer, stops at every
    end-of-sequence id it has, and decodes the reply without the EOS."""
    import gptkit.core.generate as generate
    from gptkit.formats.hf_tokenizer import HFTokenizer
    from gptkit.formats.instructions import inference_prompt, parse_record
    from gptkit.runs.finetune import resolve_style, respond

    tok = HFTokenizer(checkpoint / "tokenizer.json")
    style = resolve_style(None, None, tok)
    record = parse_record(records[1][0])
    reply = tok.encode("Blue")[1:]
    seen = {}

    def fake(model, prompts, sampler, **settings):
        seen.update(prompts=prompts, **settings)
        new = [*reply, tok.eos_ids[1]]
        return [type("G", (), {"new_ids": new, "finish_reason": "eos"})()]

    monkeypatch.setattr(generate, "generate_tokens", fake)
    out = respond(None, style, [record], max_new_tokens=8, tokenizer=tok)
    assert seen["eos_id"] == tok.eos_ids and len(tok.eos_ids) == 2
    (prompt,) = seen["prompts"]
    assert prompt == tok.encode(inference_prompt(style, record))
    assert prompt[0] == tok.bos_id and prompt[1] != tok.bos_id  # one BOS
    assert out == ["Blue"]
