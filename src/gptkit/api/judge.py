"""Scoring ``responses.json`` with an LLM judge through any OpenAI-compatible
chat endpoint, with the book's chapter-7 prompt (``generate_model_scores``)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptkit.errors import GptkitError


def judge_prompt(entry: dict[str, Any]) -> str:
    """The book's scoring prompt (section 7.8) for one response."""
    from gptkit.plugins.prompt_styles.styles import Alpaca

    formatted = Alpaca().instruction_prompt(
        entry["instruction"], entry.get("input", "")
    )
    return (
        f"Given the input `{formatted}` "
        f"and correct output `{entry['output']}`, "
        f"score the model response `{entry['model_response']}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


@dataclass
class Judgement:
    """Scores (None: the judge's answer was not an integer) and their mean."""

    scores: list[int | None] = field(default_factory=list)

    @property
    def scored(self) -> list[int]:
        return [s for s in self.scores if s is not None]

    @property
    def mean(self) -> float | None:
        return sum(self.scored) / len(self.scored) if self.scored else None


def read_responses(path: str | Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise GptkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GptkitError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise GptkitError(f"{path} holds no responses (a JSON list, as responses.json)")
    for i, entry in enumerate(entries):
        missing = [
            k
            for k in ("instruction", "output", "model_response")
            if not isinstance(entry, dict) or k not in entry
        ]
        if missing:
            raise GptkitError(f"{path}: record {i}: field {missing[0]!r} is missing")
    return entries


def judge(
    responses: str | Path,
    *,
    endpoint: str,
    model: str,
    api_key: str | None = None,
    max_tokens: int = 8,
    timeout: float = 120.0,
) -> Judgement:
    """Ask ``model`` at ``endpoint`` (``http://host:port/v1``) to score every
    response 0-100, greedily (temperature 0), as the book does with Llama 3."""
    entries = read_responses(responses)
    result = Judgement()
    url = endpoint.rstrip("/") + "/chat/completions"
    for entry in entries:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": judge_prompt(entry)}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": 123,
        }
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(
            url, json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise GptkitError(
                f"the judge at {url} answered {exc.code}: {detail}"
            ) from None
        except (OSError, ValueError) as exc:
            raise GptkitError(f"cannot reach the judge at {url}: {exc}") from None
        text = answer["choices"][0]["message"]["content"] or ""
        match = re.fullmatch(r"\s*(\d{1,3})\s*", text)
        result.scores.append(int(match.group(1)) if match else None)
    return result
