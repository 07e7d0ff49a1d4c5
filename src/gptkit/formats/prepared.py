"""``gptkit prepare``: corpora larger than memory, tokenized once into a
memory-mapped file that ``gptkit train --data DIR`` streams windows from.

A prepared corpus is a directory::

    DIR/meta.json    what it holds (below); written last, so its presence means done
    DIR/tokens.bin   every token id as little-endian uint16 (GPT-2's ids < 65,536)

``tokens.bin`` is the documents' tokens in order with ``<|endoftext|>`` (50256)
between documents, exactly the ids of ``encode("<|endoftext|>".join(docs))`` (the
``--corpus`` path); its first ``train_tokens`` ids are the training part, the rest
validation (a split by tokens, as the book splits its text by characters).
``meta.json`` records the token, document and character counts, the split, the
tokenizer and every input's size and sha256.

Preparation is parallel and resumable. Each input file is cut into shards of about
``shard_bytes`` just before a newline that precedes a printable ASCII character
(a place GPT-2's pre-tokenizer never joins across, so the shards tokenize
exactly as the whole text would); a pool of processes tokenizes the shards into
``DIR/.work/`` (each shard file renamed into place when complete); the shards are
then concatenated into ``tokens.bin``. A preparation that stops (Ctrl-C, a
crash) continues where it was when rerun with the same inputs; finished shards
are skipped.

Torch-free: numpy and the tokenizer only.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gptkit._version import __version__
from gptkit.core.token_files import FORMAT, META, TOKENS, VERSION, WORK, read_meta
from gptkit.errors import GptkitError, SettingError
from gptkit.system.lock import RunLock, run_dir_is_empty
from gptkit.system.storage import atomic_open, atomic_write, guarded

PLAN = "plan.json"
EOT_ID = 50256
ENDOFTEXT_CHARS = len("<|endoftext|>")
DEFAULT_SHARD_BYTES = 4 << 20
_BOM = b"\xef\xbb\xbf"
# A line start: a newline, then a printable non-space ASCII character.
_LINE_START = re.compile(rb"\n[\x21-\x7e]")


@dataclass(frozen=True)
class Shard:
    """One unit of work: bytes ``start:end`` of a file, or a whole in-memory
    document (``text``), followed by ``<|endoftext|>`` when ``eot_after``."""

    index: int
    source: str  # a file path, or "corpus-name#document-number"
    start: int
    end: int
    eot_after: bool
    text: str | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Source:
    """An input: a file (sha256 filled in while tokenizing) or a document of a
    corpus plugin."""

    name: str
    bytes: int
    mtime_ns: int = 0
    sha256: str = ""


# -- reading a prepared corpus ------------------------------------------------


# -- planning -------------------------------------------------------------------


def resolve_inputs(specs: Sequence[str]) -> list[tuple[str, Any]]:
    """Each spec as (kind, what): ``("file", Path)`` for paths, directories and
    globs (the ``files`` corpus's rules), ``("docs", corpus)`` for a corpus
    plugin's name."""
    from gptkit.core.registry import get_registry

    corpora = get_registry().corpora
    out: list[tuple[str, Any]] = []
    for spec in specs:
        if spec in corpora and spec != "files":
            out.append(("docs", (spec, corpora.create(spec))))
            continue
        for path in corpora.create("files", paths=(spec,)).files():  # type: ignore[attr-defined]
            if not path.is_file():
                raise GptkitError(f"corpus file not found: {path}")
            out.append(("file", path))
    if not out:
        raise GptkitError("give at least one corpus")
    return out


def _line_start_after(f: Any, pos: int, size: int) -> int:
    """The offset of the first newline at or after ``pos`` that is followed by
    a printable ASCII character (``size`` if there is none).

    Cutting just before such a newline keeps GPT-2's pre-tokenization intact:
    in the whole text the newline, being the last character of a whitespace run
    before a non-space, is a pre-token of its own (or the end of none), and the
    whitespace before it ends a pre-token at the same place whether the text
    continues or not (its ``\\s+(?!\\S)`` alternative).
    """
    block_size = 1 << 16
    at = pos
    while at < size - 1:
        f.seek(at)
        block = f.read(block_size)
        match = _LINE_START.search(block)
        if match:
            return at + match.start()
        at += len(block) - 1
    return size


def plan(specs: Sequence[str], shard_bytes: int) -> tuple[list[Source], list[Shard]]:
    """The inputs and the shards to tokenize, in document order."""
    sources: list[Source] = []
    documents: list[list[tuple[str, int, int, str | None]]] = []
    for kind, what in resolve_inputs(specs):
        if kind == "file":
            path: Path = what
            stat = path.stat()
            size = stat.st_size
            if size == 0 or (size == len(_BOM) and path.read_bytes() == _BOM):
                raise GptkitError(f"corpus file is empty: {path}")
            sources.append(Source(str(path), size, stat.st_mtime_ns))
            cuts = [0]
            with open(path, "rb") as f:
                while size - cuts[-1] > shard_bytes:
                    nxt = _line_start_after(f, cuts[-1] + shard_bytes, size)
                    if nxt >= size:
                        break
                    cuts.append(nxt)
            cuts.append(size)
            documents.append([(str(path), a, b, None) for a, b in pairwise(cuts)])
        else:
            name, corpus = what
            for i, doc in enumerate(corpus.documents()):
                data = doc.encode("utf-8")
                digest = hashlib.sha256(data).hexdigest()
                sources.append(Source(f"{name}#{i}", len(data), 0, digest))
                documents.append([(f"{name}#{i}", 0, len(data), doc)])
    shards: list[Shard] = []
    for d, doc_pieces in enumerate(documents):
        for p, (source, start, end, text) in enumerate(doc_pieces):
            last_piece = p == len(doc_pieces) - 1
            eot = last_piece and d < len(documents) - 1
            shards.append(Shard(len(shards), source, start, end, eot, text))
    return sources, shards


# -- tokenizing a shard (runs in the worker processes) -------------------------


def tokenize_shard(shard: Shard, work: Path) -> dict[str, int]:
    """Tokenize one shard into ``work/shard-NNNNNN.bin`` (+ a ``.json`` with
    its counts, whose presence marks the shard done); return the counts."""
    from gptkit.core.tokenizer import ENDOFTEXT, get_tokenizer

    if shard.text is not None:
        text = shard.text
    else:
        with open(shard.source, "rb") as f:
            f.seek(shard.start)
            data = f.read(shard.size)
        if shard.start == 0 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            offset = shard.start + exc.start
            raise GptkitError(
                f"{shard.source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at"
                f" offset {offset}); convert it, e.g. with iconv -t utf-8"
            ) from None
        del data
    enc = get_tokenizer()
    if hasattr(enc, "encode_to_numpy"):  # tiktoken >= 0.8: no Python int list
        ids = enc.encode_to_numpy(text, allowed_special={ENDOFTEXT})
    else:  # pragma: no cover - older tiktoken
        ids = np.asarray(enc.encode(text, allowed_special={ENDOFTEXT}))
    tokens = ids.astype(np.uint16)
    if shard.eot_after:
        tokens = np.append(tokens, np.uint16(EOT_ID))
    counts = {
        "tokens": int(tokens.size),
        "characters": len(text),
        "bytes": shard.size,
    }
    stem = work / f"shard-{shard.index:06d}"
    atomic_write(stem.with_suffix(".bin"), tokens.tobytes())
    atomic_write(stem.with_suffix(".json"), json.dumps(counts).encode())
    return counts


def _worker(job: tuple[Shard, str]) -> tuple[int, dict[str, int]]:
    shard, work = job
    return shard.index, tokenize_shard(shard, Path(work))


def _shard_done(work: Path, index: int) -> dict[str, int] | None:
    stem = work / f"shard-{index:06d}"
    try:
        counts = json.loads(stem.with_suffix(".json").read_text())
        if stem.with_suffix(".bin").stat().st_size == 2 * counts["tokens"]:
            return counts
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


# -- the whole preparation -------------------------------------------------------


def _hash_files(sources: list[Source], out: dict[str, str]) -> None:
    for source in sources:
        if source.sha256:
            continue
        digest = hashlib.sha256()
        try:
            with open(source.name, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            continue  # reported by prepare(), which finds no hash
        out[source.name] = digest.hexdigest()


def prepare(
    specs: Sequence[str],
    out: Path,
    *,
    train_ratio: float = 0.9,
    workers: int = 1,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
    message: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Tokenize ``specs`` into the prepared corpus ``out``; return its metadata.

    Refuses (one-line :class:`GptkitError`, nothing changed) a directory that
    holds something else: other files, or a corpus or an unfinished preparation
    of other inputs. Rerun with the same inputs, it finishes an interrupted
    preparation, or returns at once when it is complete.
    """
    if not 0.0 < train_ratio < 1.0:
        raise SettingError(
            f"{{train_ratio}} must be between 0 and 1, got {train_ratio}"
        )
    if workers < 1 or shard_bytes < 1:
        raise SettingError("{workers} and the shard size must be positive")
    started = time.perf_counter()
    sources, shards = plan(specs, shard_bytes)
    # What the result depends on (not the shard size or the number of workers).
    identity = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": "gpt2",
        "train_ratio": train_ratio,
        "inputs": [[s.name, s.bytes, s.mtime_ns, s.sha256] for s in sources],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    with guarded(out, "use"):
        if out.exists() and not out.is_dir():
            raise SettingError(
                f"{out} exists and is not a directory; choose another {{out}}"
            )
    # One preparation writes a directory at a time; every write error is one
    # line naming its file.
    with RunLock(out, "prepare"), guarded(out):
        meta = _prepare_into(
            out,
            key,
            identity,
            specs,
            sources,
            shards,
            train_ratio=train_ratio,
            workers=workers,
            shard_bytes=shard_bytes,
            progress=progress,
            message=message,
        )
    meta["seconds"] = round(time.perf_counter() - started, 3)
    return meta


def _prepare_into(
    out: Path,
    key: str,
    identity: dict[str, Any],
    specs: Sequence[str],
    sources: list[Source],
    shards: list[Shard],
    *,
    train_ratio: float,
    workers: int,
    shard_bytes: int,
    progress: bool,
    message: Callable[[str], None],
) -> dict[str, Any]:
    work = out / WORK
    if (out / META).is_file():
        meta = read_meta(out)
        if meta.get("inputs_key") == key:
            message(f"{out} is already prepared from these inputs; nothing to do")
            return meta
        raise SettingError(
            f"{out} already holds a prepared corpus of other inputs or settings;"
            " choose another {out} (nothing was changed)"
        )
    if (work / PLAN).is_file():
        try:
            previous = json.loads((work / PLAN).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        if previous.get("key") != key:
            raise SettingError(
                f"{out} holds an unfinished preparation of other inputs or settings;"
                " delete it or choose another {out} (nothing was changed)"
            )
        if previous.get("shard_bytes") != shard_bytes:  # keep its shards
            shard_bytes = int(previous["shard_bytes"])
            sources, shards = plan(specs, shard_bytes)
    elif not run_dir_is_empty(out):
        raise SettingError(
            f"{out} exists and is not a gptkit prepare directory; choose another"
            " {out} (nothing was changed)"
        )
    work.mkdir(parents=True, exist_ok=True)
    plan_record = {"key": key, "shard_bytes": shard_bytes, **identity}
    atomic_write(work / PLAN, json.dumps(plan_record).encode())

    done = {s.index: c for s in shards if (c := _shard_done(work, s.index))}
    todo = [s for s in shards if s.index not in done]
    if done:
        message(f"resuming: {len(done)} of {len(shards)} shards already tokenized")
    hashes: dict[str, str] = {}
    hasher = threading.Thread(target=_hash_files, args=(sources, hashes), daemon=True)
    hasher.start()
    total = sum(s.size for s in shards)
    from gptkit.system.progress import auto_tqdm

    with auto_tqdm()(
        total=total,
        initial=sum(c["bytes"] for c in done.values()),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="tokenizing",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        jobs = [(s, str(work)) for s in todo]
        if workers == 1 or len(todo) <= 1:
            results = map(_worker, jobs)
            _collect(results, done, bar)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(todo))) as pool:
                _collect(pool.imap_unordered(_worker, jobs), done, bar)
    hasher.join()
    unread = [s.name for s in sources if not s.sha256 and s.name not in hashes]
    if unread:
        raise GptkitError(f"could not read {unread[0]} again to hash it")

    n_tokens = sum(done[s.index]["tokens"] for s in shards)
    n_train = int(train_ratio * n_tokens)
    if n_train == 0 or n_train == n_tokens:
        raise SettingError(
            f"{n_tokens} tokens cannot be split at {{train_ratio}} {train_ratio}"
        )
    _concatenate(work, [s.index for s in shards], out / TOKENS)
    documents = sum(1 for s in shards if s.eot_after) + 1
    characters = sum(done[s.index]["characters"] for s in shards)
    inputs = [
        {"source": s.name, "bytes": s.bytes, "sha256": s.sha256 or hashes[s.name]}
        for s in sources
    ]
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": "gpt2",
        "dtype": "uint16",
        "eot_token": EOT_ID,
        "tokens_file": TOKENS,
        "tokens": n_tokens,
        "train_tokens": n_train,
        "val_tokens": n_tokens - n_train,
        "train_ratio": train_ratio,
        "documents": documents,
        "characters": characters + ENDOFTEXT_CHARS * (documents - 1),
        "bytes": total,
        "inputs": inputs,
        "inputs_sha256": hashlib.sha256(
            "".join(i["sha256"] for i in inputs).encode()
        ).hexdigest(),
        "shard_bytes": shard_bytes,
        "inputs_key": key,
        "gptkit_version": __version__,
    }
    atomic_write(out / META, (json.dumps(meta, indent=2) + "\n").encode())
    shutil.rmtree(work, ignore_errors=True)
    return meta


def _collect(results: Any, done: dict[int, dict[str, int]], bar: Any) -> None:
    for index, counts in results:
        done[index] = counts
        bar.update(counts["bytes"])


def _concatenate(work: Path, indices: list[int], target: Path) -> None:
    """Stream the shard files into ``target`` (temporary name, fsync, rename)."""
    with atomic_open(target, "wb") as out:
        for index in indices:
            with open(work / f"shard-{index:06d}.bin", "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
