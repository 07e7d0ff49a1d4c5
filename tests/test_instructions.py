"""Instruction data (formats, malformed records, the book's split and data
set), the prompt styles and the book's collate function."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from gptkit.core.registry import get_registry
from gptkit.errors import GptkitError, SettingError
from gptkit.formats.instructions import (
    BUILTIN_DATASETS,
    Record,
    read_instruction_data,
    resolve_data_path,
    split_records,
)
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data" / "instruction-data.json"
BOOK = [
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Add.", "input": "2 and 3", "output": "5"},
]


def style(name, **options):
    return get_registry().prompt_styles.create(name, options)


def test_the_three_formats_read_alike(tmp_path):
    book = tmp_path / "book.json"
    book.write_text(json.dumps(BOOK))
    lines = tmp_path / "book.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in BOOK) + "\n")
    chats = tmp_path / "chat.jsonl"
    chats.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                ]
            }
        )
    )
    a, b = read_instruction_data(str(book)), read_instruction_data(str(lines))
    assert [r.raw for r in a.records] == [r.raw for r in b.records] == BOOK
    assert a.records[1].input == "2 and 3" and not a.problems
    chat = read_instruction_data(str(chats)).records[0]
    assert chat.is_chat and chat.reply() == "Hello."


def test_each_malformed_record_is_one_line_naming_it_and_its_field(tmp_path):
    bad = [
        BOOK[0],
        {"instruction": "x"},
        {"instruction": "x", "output": ""},
        {"instruction": 3, "output": "y"},
        "text",
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": [{"role": "bot", "content": "q"}]},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(bad))
    data = read_instruction_data(str(path))
    assert len(data.records) == 1
    assert data.problems == [
        f"{path}: record 1: field 'output' is missing; skipped",
        f"{path}: record 2: field 'output' is empty; skipped",
        f"{path}: record 3: field 'instruction' is not a string; skipped",
        f"{path}: record 4: not a JSON object but str; skipped",
        f"{path}: record 5: field 'messages': the last message is not the"
        " assistant's; skipped",
        f"{path}: record 6: field 'messages[0].role' is 'bot', not one of system,"
        " user, assistant; skipped",
    ]
    lines = tmp_path / "d.jsonl"
    lines.write_text(json.dumps(BOOK[0]) + "\n{oops\n")
    assert (
        read_instruction_data(str(lines))
        .problems[0]
        .startswith(f"{lines}: line 2: not valid JSON")
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "has no usable instruction record"),
        ('[{"instruction": "x"}]', "has no usable instruction record (1 malformed)"),
        ("", "is empty"),
        ("[1, 2", "is not valid JSON"),
        ("hello", "neither a JSON list nor JSON Lines"),
    ],
)
def test_files_without_usable_records_are_refused(tmp_path, content, message):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(GptkitError, match=re.escape(message)):
        read_instruction_data(str(path))


def test_a_missing_file_names_the_built_in_data_sets(tmp_path):
    with pytest.raises(GptkitError, match="instruction-data"):
        resolve_data_path(str(tmp_path / "none.json"))


def test_the_books_split_order_and_sizes():
    records = [Record(instruction=str(i), output="o") for i in range(1100)]
    split = split_records(records)
    # The book's 935 / 110 / 55, train then test then validation.
    assert (len(split.train), len(split.test), len(split.val)) == (935, 110, 55)
    assert split.test[0].instruction == "935" and split.val[0].instruction == "1045"
    with pytest.raises(SettingError, match="nothing for validation"):
        split_records(records, 0.9, 0.1)


def test_the_built_in_data_set_is_cached_and_checked(monkeypatch, tmp_path):
    if not SHARED.is_file():
        pytest.skip("no shared instruction-data.json")
    import urllib.request

    monkeypatch.setenv("GPTKIT_CACHE_DIR", str(tmp_path))
    calls = []

    class Response:
        def __init__(self, data):
            self.data = data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.data

    def fake(url, timeout):
        calls.append(url)
        return Response(SHARED.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    data = read_instruction_data("instruction-data")
    assert len(data.records) == 1100 and calls == [
        BUILTIN_DATASETS["instruction-data"][0]
    ]
    read_instruction_data("instruction-data")  # from the cache
    assert len(calls) == 1
    cached = tmp_path / "datasets" / "instruction-data.json"
    cached.write_text("[]")  # damaged: fetched again, and a bad download refused
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(b"x"))
    with pytest.raises(GptkitError, match="does not match its sha256"):
        read_instruction_data("instruction-data")

    def offline(url, timeout):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(GptkitError, match="cannot download instruction-data"):
        read_instruction_data("instruction-data")
    shutil.copy(SHARED, cached)  # a local copy works offline
    assert len(read_instruction_data("instruction-data").records) == 1100


def test_alpaca_is_the_books_format_input():
    alpaca = style("alpaca")
    prompt = alpaca.instruction_prompt("Add.", "2 and 3")
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that"
        " appropriately completes the request.\n\n### Instruction:\nAdd.\n\n"
        "### Input:\n2 and 3"
    )
    assert alpaca.response_text("5") == "\n\n### Response:\n5"
    chat = alpaca.chat_prompt(
        [{"role": "user", "content": "Add.\n\n### Input:\n2 and 3"}]
    )
    assert chat == prompt + "\n\n### Response:\n"
    assert alpaca.clean_response("\n\n### Response:\n5 \n") == "5"


def test_phi3_is_the_books_exercise():
    phi3 = style("phi3")
    assert phi3.instruction_prompt("Add.", "2 and 3") == "<|user|>\nAdd.\n2 and 3"
    assert phi3.response_text("5") == "\n<|assistant|>:\n5"
    assert phi3.clean_response("\n<|assistant|>:\n5") == "5"


TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_template_renders_a_tokenizers_template():
    chat = style("chat-template", template=TEMPLATE, bos_token="<s>")
    messages = [{"role": "user", "content": "Hi"}]
    assert chat.chat_prompt(messages) == "<s><|user|>Hi<|end|><|assistant|>"
    assert chat.instruction_prompt("Add.", "2") == (
        "<s><|user|>Add.\n\n2<|end|><|assistant|>"
    )
    assert chat.response_text("5") == "5<|end|>"
    with pytest.raises(GptkitError, match="no chat template"):
        style("chat-template")
    broken = style("chat-template", template="{% for %}")
    with pytest.raises(GptkitError, match="does not parse"):
        broken.chat_prompt(messages)


def test_collate_is_the_books():
    import torch

    from gptkit.formats.instruction_batches import InstructionCollator

    batch = [(2, [0, 1, 2, 3, 4]), (1, [5, 6]), (2, [7, 8, 9])]
    inputs, targets = InstructionCollator()(batch)
    # The book's section 7.3 example: pad with 50256, keep the first padding
    # target, mask the rest with -100.
    assert inputs.tolist() == [
        [0, 1, 2, 3, 4],
        [5, 6, 50256, 50256, 50256],
        [7, 8, 9, 50256, 50256],
    ]
    assert targets.tolist() == [
        [1, 2, 3, 4, 50256],
        [6, 50256, -100, -100, -100],
        [8, 9, 50256, -100, -100],
    ]
    masked = InstructionCollator(mask_prompt=True, allowed_max_length=3)(batch)[1]
    assert masked.tolist() == [[-100, 2, 3], [6, 50256, -100], [-100, 9, 50256]]
    assert masked.dtype == torch.long
