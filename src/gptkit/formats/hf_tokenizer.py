"""A checkpoint's own tokenizer: its ``tokenizer.json`` through the Hugging Face
``tokenizers`` library (Llama 3, Qwen3, any family that ships one).

Ids are those of ``transformers.AutoTokenizer`` on the same file: the
tokenizer's post-processor adds what the checkpoint adds (Llama 3's
``<|begin_of_text|>``), and special tokens written in the text are recognised.
The ids generation stops on come from ``generation_config.json``, else
``config.json``, else the ``eos_token`` of ``tokenizer_config.json`` (files
beside the tokenizer.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptkit.core.tokenizer import Tokenizer
from gptkit.errors import GptkitError

TOKENIZER_JSON = "tokenizer.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptkitError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def _token_ids(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _token_text(value: Any) -> str | None:
    """A special token in tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class HFTokenizer(Tokenizer):
    """A ``tokenizer.json`` (and the files beside it)."""

    def __init__(self, path: Path, spec: str | None = None) -> None:
        from tokenizers import Tokenizer as Backend

        try:
            self.backend = Backend.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exceptions
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise GptkitError(f"{path} is not a tokenizer.json: {first}") from None
        self.path = path
        self.spec = spec or str(path)
        self.n_vocab = self.backend.get_vocab_size(with_added_tokens=True)
        folder = path.parent
        tok_config = _read_json(folder / "tokenizer_config.json")
        eos: list[int] = []
        for name in ("generation_config.json", "config.json"):
            eos = _token_ids(_read_json(folder / name).get("eos_token_id"))
            if eos:
                break
        eos_text = _token_text(tok_config.get("eos_token"))
        if not eos and eos_text is not None:
            found = self.backend.token_to_id(eos_text)
            eos = [found] if found is not None else []
        self.eos_ids = tuple(eos)
        # The chat template (tokenizer_config.json's, else chat_template.jinja)
        # and the texts it is rendered with: the chat-template prompt style's.
        template = tok_config.get("chat_template")
        jinja = folder / "chat_template.jinja"
        if not isinstance(template, str) and jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        self.chat_template = template if isinstance(template, str) else None
        self.eos_token = eos_text
        self.bos_token = _token_text(tok_config.get("bos_token"))
        bos_text = _token_text(tok_config.get("bos_token"))
        self.bos_id = self.backend.token_to_id(bos_text) if bos_text else None
        # Documents of a corpus are separated by the end-of-sequence token.
        first_eos = self.backend.id_to_token(eos[0]) if eos else None
        self.separator = first_eos or ""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with the tokenizer's special tokens added (a
        Llama 3 tokenizer puts BOS first). A text that already starts with
        the BOS token (a rendered chat template writes it) gets no second one,
        as ``transformers``' ``apply_chat_template`` encodes it: for training,
        ``lm.generate``, ``lm.chat`` and serving alike."""
        ids = list(self.backend.encode(text, add_special_tokens=True).ids)
        bos = self.bos_id
        if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos:
            del ids[0]
        return ids

    def fingerprint(self) -> str:
        """A hash of the vocabulary (added tokens included), so copies of one
        tokenizer in different directories compare equal."""
        import hashlib

        if not hasattr(self, "_fingerprint"):
            vocab = sorted(self.backend.get_vocab(with_added_tokens=True).items())
            digest = hashlib.sha256(json.dumps(vocab).encode("utf-8")).hexdigest()
            self._fingerprint = f"tokenizer.json:{digest[:16]}"
        return self._fingerprint

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)


def tokenizer_file(spec: str) -> tuple[Path, str]:
    """The ``tokenizer.json`` a spec names, and the spec to record."""
    if spec.startswith("hf:"):
        path = Path(spec[3:]).expanduser()
        if not path.exists():
            return _hub_tokenizer(spec[3:]), spec
        spec = spec[3:]
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / TOKENIZER_JSON
    if not path.is_file():
        raise GptkitError(
            f"tokenizer not found: {path} (a tokenizer is gpt2, a tokenizer.json,"
            " a directory holding one, or hf:org/repo)"
        )
    return path, str(path.resolve())


def _hub_tokenizer(name: str) -> Path:
    """tokenizer.json of a Hub model ``org/repo[@revision]`` (from the Hugging
    Face cache, else downloaded), with the optional files beside it that say
    which ids end a sequence."""
    import huggingface_hub

    repo, _, revision = name.partition("@")
    if "/" not in repo:
        raise GptkitError(
            f"tokenizer hf:{name}: give a Hub repository (org/name) or a directory"
        )

    def get(filename: str) -> Path:
        return Path(
            huggingface_hub.hf_hub_download(repo, filename, revision=revision or None)
        )

    try:
        path = get(TOKENIZER_JSON)
    except Exception as exc:  # the Hub and HTTP clients raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise GptkitError(
            f"no {TOKENIZER_JSON} for hf:{name} (not cached, and the Hub said:"
            f" {type(exc).__name__}: {first})"
        ) from None
    for extra in ("tokenizer_config.json", "generation_config.json", "config.json"):
        try:
            get(extra)
        except Exception:  # optional files
            pass
    return path


def load_hf_tokenizer(spec: str) -> HFTokenizer:
    """The tokenizer a spec names (see :func:`tokenizer_file`)."""
    path, recorded = tokenizer_file(spec)
    return HFTokenizer(path, recorded)
