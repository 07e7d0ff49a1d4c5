"""Instruction data: records, files, the book's split (torch-free).

Three formats are read, told apart by their content, not their name:

- the book's JSON: a list of ``{"instruction", "input", "output"}`` objects
  (``input`` may be empty or missing);
- JSON Lines: one such object per line;
- chat records (in either container): ``{"messages": [{"role", "content"},
  ...]}`` ending with the assistant's reply.

A malformed record is reported in one line naming it (``record 3`` is
``data[3]`` of a JSON list; JSON Lines say ``line 4``) and the field, and
skipped; a file with no usable record is an error. ``instruction-data`` names the
book's 1,100 examples, downloaded once into the gptkit cache and checked by
sha256; any other name is a path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptkit.errors import GptkitError, SettingError

#: The book's chapter-7 data set (Raschka, 2024), 1,100 instruction records.
BUILTIN_DATASETS = {
    "instruction-data": (
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
        "ch07/01_main-chapter-code/instruction-data.json",
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    ),
}
ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    """One training example: the book's fields, or a conversation."""

    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: list[dict[str, str]] | None = None
    #: The record as read (written back, with the model's response, to
    #: ``responses.json``).
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def reply(self) -> str:
        """The expected answer (``output``, or the last assistant message)."""
        return self.messages[-1]["content"] if self.messages else self.output


@dataclass
class InstructionData:
    """The usable records of a file and the problems met reading it."""

    source: str
    records: list[Record]
    problems: list[str] = field(default_factory=list)


def resolve_data_path(spec: str) -> Path:
    """A built-in data set name (downloaded into the cache once) or a path."""
    if spec in BUILTIN_DATASETS:
        from gptkit.system.downloads import cache_dir, cached_download

        url, digest = BUILTIN_DATASETS[spec]
        path = cache_dir() / "datasets" / f"{spec}.json"
        return cached_download(
            url,
            digest,
            path,
            what=spec,
            hint=f"save the book's {spec}.json as {path} or pass its path to --data",
        )
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(BUILTIN_DATASETS)
        raise GptkitError(
            f"instruction data not found: {spec} (neither a file nor a built-in"
            f" data set: {names})"
        )
    if not path.is_file():
        raise GptkitError(f"instruction data {spec} is not a file")
    return path


def read_instruction_data(spec: str) -> InstructionData:
    """The records of ``spec`` (see the module); malformed ones are reported
    in :attr:`InstructionData.problems` and left out."""
    path = resolve_data_path(spec)
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise GptkitError(f"{spec} is not UTF-8 text") from None
    items = _items(text, spec)
    data = InstructionData(spec, [])
    for where, item in items:
        try:
            data.records.append(parse_record(item))
        except ValueError as exc:
            data.problems.append(f"{spec}: {where}: {exc}; skipped")
    if not data.records:
        why = f" ({len(data.problems)} malformed)" if data.problems else ""
        first = f"; {data.problems[0]}" if data.problems else ""
        raise GptkitError(f"{spec} has no usable instruction record{why}{first}")
    return data


def _items(text: str, spec: str) -> list[tuple[str, Any]]:
    """(where, parsed JSON value) of each record of a JSON list or JSON Lines."""
    stripped = text.lstrip()
    if not stripped:
        raise GptkitError(f"{spec} is empty")
    if stripped[0] == "[":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise GptkitError(f"{spec} is not valid JSON ({exc})") from None
        return [(f"record {i}", item) for i, item in enumerate(value)]
    items: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"line {number}", json.loads(line)))
        except ValueError as exc:
            if number == 1 and stripped[0] != "{":
                raise GptkitError(
                    f"{spec} is neither a JSON list nor JSON Lines ({exc})"
                ) from None
            items.append((f"line {number}", _Invalid(str(exc))))
    return items


class _Invalid:
    def __init__(self, why: str) -> None:
        self.why = why


def parse_record(item: Any) -> Record:
    """A record from one JSON value; ``ValueError`` names the bad field."""
    if isinstance(item, _Invalid):
        raise ValueError(f"not valid JSON ({item.why})")
    if not isinstance(item, dict):
        raise ValueError(f"not a JSON object but {type(item).__name__}")
    if "messages" in item:
        return Record(messages=_messages(item["messages"]), raw=item)
    for name in ("instruction", "output"):
        if name not in item:
            raise ValueError(f"field {name!r} is missing")
    values = {}
    for name in ("instruction", "input", "output"):
        value = item.get(name, "")
        if value is None and name == "input":
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"field {name!r} is not a string")
        values[name] = value
    for name in ("instruction", "output"):
        if not values[name].strip():
            raise ValueError(f"field {name!r} is empty")
    return Record(**values, raw=item)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("field 'messages' is not a non-empty list")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"field 'messages[{i}]' is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(
                f"field 'messages[{i}].role' is {role!r}, not one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise ValueError(f"field 'messages[{i}].content' is not a string")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise ValueError("field 'messages': the last message is not the assistant's")
    if not out[-1]["content"].strip():
        raise ValueError(f"field 'messages[{len(out) - 1}].content' is empty")
    if not any(m["role"] == "user" for m in out):
        raise ValueError("field 'messages' has no user message")
    return out


@dataclass
class Split:
    """The book's three parts, in the book's order: train, test, validation."""

    train: list[Record]
    test: list[Record]
    val: list[Record]


def split_records(
    records: list[Record], train_ratio: float = 0.85, test_ratio: float = 0.1
) -> Split:
    """``data[:int(n * 0.85)]`` for training, the next ``int(n * 0.1)`` for
    testing, the rest for validation (section 7.2 of the book)."""
    if train_ratio + test_ratio >= 1.0:
        raise SettingError(
            f"{{train_ratio}} {train_ratio} + {{test_ratio}} {test_ratio} leaves"
            " nothing for validation; keep their sum below 1"
        )
    n = len(records)
    n_train, n_test = int(n * train_ratio), int(n * test_ratio)
    split = Split(
        records[:n_train],
        records[n_train : n_train + n_test],
        records[n_train + n_test :],
    )
    if not split.train or not split.val:
        raise SettingError(
            f"{n} records make {len(split.train)} for training and"
            f" {len(split.val)} for validation; both need at least one (use more"
            " data or another {train_ratio})"
        )
    return split


def prompt_and_response(style: Any, record: Record) -> tuple[str, str]:
    """The training text of ``record`` under ``style``, as (prompt, response)."""
    if record.messages is not None:
        return style.chat_prompt(record.messages[:-1]), record.messages[-1]["content"]
    return (
        style.instruction_prompt(record.instruction, record.input),
        style.response_text(record.output),
    )


def inference_prompt(style: Any, record: Record) -> str:
    """The prompt a test response is generated from: the book's
    ``format_input(entry)`` (the model writes the response header itself), or
    the conversation before the reply."""
    if record.messages is not None:
        return style.chat_prompt(record.messages[:-1])
    return style.instruction_prompt(record.instruction, record.input)
