"""GPT-2 in Hugging Face format: from the Hub (``hf:gpt2``, ``hf:org/repo@rev``)
or a local directory (``hf:path/to/dir``, or a bare path to such a directory).

Only ``config.json`` and safetensors weights are read (``model.safetensors``, or
the shards a ``model.safetensors.index.json`` lists): never pickle files, so
nothing loaded can run code. The config is checked before the weights are
downloaded. Tensors come back on the CPU in the file's dtype (fp32 for OpenAI's
GPT-2), in gptkit's names; the caller casts them and moves them to the device.
Each tensor is read and converted on its own, with the file mapped only while
that tensor is read, so loading needs about the file's size in memory (see
``benchmarks/scripts/load_memory.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.core.interfaces import LoadedWeights, WeightLoader
from gptkit.errors import GptkitError
from gptkit.plugins.loaders.hub import (
    CONFIG,
    GPT2_ALIASES,
    WEIGHTS,
    HubModel,
    fetch,
    parse_hub_name,
    snapshot_commit,
)

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.formats.hf import TensorSource

INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def is_hf_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding a GPT-2 ``config.json`` (the
    ``model_type`` a ``transformers`` config has; gptkit's own checkpoints
    have ``format: gptkit`` instead)."""
    try:
        data = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("model_type") == "gpt2"


def read_hf_config(path: Path) -> tuple[GPTConfig, dict[str, Any]]:
    """The GPTConfig and the raw dict of a ``transformers`` ``config.json``."""
    from gptkit.formats.hf import config_from_hf

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GptkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptkitError(f"{path} is not valid JSON: {exc}") from None
    return config_from_hf(data, where=str(path)), data


def read_shard_index(path: Path) -> list[str]:
    """The shard file names a ``model.safetensors.index.json`` lists."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise GptkitError(f"{path} is not a safetensors shard index") from None
    for shard in shards:
        plain = isinstance(shard, str) and Path(shard).name == shard
        if not plain or shard in ("", ".", "..") or "\\" in shard:
            raise GptkitError(f"{path} names an invalid shard file {shard!r}")
    return shards


def safetensors_source(files: list[Path]) -> TensorSource:
    """A :class:`TensorSource` over safetensors files (one, or the shards of one
    checkpoint). Each tensor is read by opening its file anew: the mapping of
    the file ends with the ``with`` block, so tensors already converted do not
    keep mapped pages resident."""
    from safetensors import safe_open

    from gptkit.formats.hf import TensorSource

    where: dict[str, Path] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with _readable(file), safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if name in where:
                    raise GptkitError(f"tensor {name} is in {where[name]} and {file}")
                where[name] = file
                shapes[name] = tuple(f.get_slice(name).get_shape())

    @contextmanager
    def open_tensor(name: str) -> Iterator[torch.Tensor]:
        with ExitStack() as stack:
            with _readable(where[name]):
                f = stack.enter_context(safe_open(str(where[name]), framework="pt"))
                tensor = f.get_tensor(name)
            yield tensor  # the caller's errors are its own, not a corrupt file

    return TensorSource(list(where), shapes.__getitem__, open_tensor)


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn safetensors' and the OS's errors into one clear line."""
    from safetensors import SafetensorError

    try:
        yield
    except FileNotFoundError:
        raise GptkitError(f"weights not found: {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise GptkitError(
            f"corrupt or unreadable safetensors file {path}: {exc}"
        ) from None


def fetch_weights(model: HubModel) -> list[Path]:
    """The cached safetensors file(s) of a Hub model: ``model.safetensors``,
    else the shards its ``model.safetensors.index.json`` lists (downloaded into
    the cache when missing)."""
    try:
        return [fetch(model, WEIGHTS)]
    except GptkitError as single_file_error:
        try:  # a large checkpoint may come in shards
            index = fetch(model, INDEX)
        except GptkitError:
            raise single_file_error from None
    return [fetch(model, shard) for shard in read_shard_index(index)]


class HFLoader(WeightLoader):
    """GPT-2 from the Hugging Face Hub or a local ``transformers`` directory.

    ``hf:gpt2`` (also ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``: OpenAI's
    checkpoints under ``openai-community/``), ``hf:org/repo[@revision]``, or
    ``hf:DIR``. An existing directory wins over an ``org/repo`` name; the
    aliases always mean the Hub (the book's code downloads into a folder named
    ``gpt2``: write ``hf:./gpt2`` for a local folder of that name).
    """

    name = "hf"
    summary = (
        "GPT-2 in Hugging Face format: gpt2 ... gpt2-xl, org/repo[@revision]"
        " from the Hub, or a local directory."
    )

    @classmethod
    def accepts(cls, location: str) -> bool:
        path = Path(location).expanduser()
        return path.is_dir() and is_hf_dir(path)

    def load(self, location: str) -> LoadedWeights:
        from gptkit.formats.hf import state_from_hf

        if not location.strip():
            raise GptkitError(
                "hf: needs a model: gpt2, gpt2-medium, gpt2-large, gpt2-xl,"
                " org/repo[@revision] or a directory"
            )
        path = Path(location).expanduser()
        extra: dict[str, Any] = {}
        alias = location.partition("@")[0] in GPT2_ALIASES  # never a local folder
        if path.is_dir() and not alias:
            cfg, data = self._local_config(path)
            files, source = self._local_weights(path), str(path)
        elif (path.exists() and not alias) or location.startswith((".", "/", "~")):
            raise GptkitError(
                f"hf:{location}: not a directory; hf: takes a Hub name"
                " (gpt2, org/repo@revision) or a directory with config.json and"
                " model.safetensors"
            )
        else:
            model = parse_hub_name(location)
            config_path = fetch(model, CONFIG)
            cfg, data = read_hf_config(config_path)  # checked before the download
            files = fetch_weights(model)
            commit = snapshot_commit(config_path)
            source = f"hf:{model.repo_id}" + (f"@{commit}" if commit else "")
            extra.update(repo_id=model.repo_id, revision=model.revision, commit=commit)
        where = str(files[0]) if len(files) == 1 else str(files[0].parent / INDEX)
        state = state_from_hf(cfg, safetensors_source(files), where=where)
        extra["hf_config"] = data
        return LoadedWeights(cfg, state, source=source, extra=extra)

    @staticmethod
    def _local_config(path: Path) -> tuple[GPTConfig, dict[str, Any]]:
        if not (path / CONFIG).is_file():
            raise GptkitError(
                f"{path} has no {CONFIG}; a Hugging Face model directory holds"
                f" {CONFIG} and {WEIGHTS}"
            )
        return read_hf_config(path / CONFIG)

    @staticmethod
    def _local_weights(path: Path) -> list[Path]:
        if (path / WEIGHTS).is_file():
            return [path / WEIGHTS]
        if (path / INDEX).is_file():
            return [path / shard for shard in read_shard_index(path / INDEX)]
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = (
            f" (it has {pickled[0]}: gptkit reads safetensors only, pickle files can"
            " run code)"
            if pickled
            else ""
        )
        raise GptkitError(f"{path} has no {WEIGHTS}{hint}")
