"""Names of GPT-2 models on the Hugging Face Hub, and fetching their files.

Files come through ``huggingface_hub.hf_hub_download``: its cache (``HF_HOME``,
``HF_HUB_CACHE``), revisions, offline mode (``HF_HUB_OFFLINE=1``) and progress
bars. Every Hub error becomes a one-line :class:`GptkitError`. Torch-free, so
``gptkit download`` starts fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gptkit.errors import GptkitError

#: OpenAI's GPT-2 checkpoints, by their familiar names.
GPT2_ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubModel:
    """A model repository on the Hub, at a revision (``None``: ``main``)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_name(name: str, revision: str | None = None) -> HubModel:
    """``gpt2`` / ``gpt2-xl@REV`` / ``org/repo[@REV]`` -> :class:`HubModel`.

    ``revision`` (``--revision``) may be given instead of ``@REV``. A bare name
    that is not an alias is an error listing the aliases.
    """
    repo, sep, at_revision = name.strip().partition("@")
    if sep and not at_revision:
        raise GptkitError(f"{name!r}: empty revision after '@'")
    if sep and revision and revision != at_revision:
        raise GptkitError(
            f"{name!r} names revision {at_revision!r} but --revision is {revision!r}"
        )
    revision = at_revision or revision or None
    if repo in GPT2_ALIASES:
        return HubModel(GPT2_ALIASES[repo], revision)
    if "/" not in repo:
        raise GptkitError(
            f"unknown GPT-2 name {repo!r}; use one of {', '.join(GPT2_ALIASES)},"
            " a Hub repository org/name[@revision] or a local directory"
        )
    if not _REPO_ID.match(repo) or ".." in repo or "--" in repo:
        raise GptkitError(
            f"{repo!r} is neither a Hub repository id (org/name) nor an existing"
            " directory"
        )
    return HubModel(repo, revision)


def cache_dir() -> Path:
    """The Hub cache ``hf_hub_download`` uses (``HF_HUB_CACHE``, ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_revisions(model: HubModel) -> list[str]:
    """Branch/tag names cached for this repository (empty: repo not cached)."""
    refs = cache_dir() / f"models--{model.repo_id.replace('/', '--')}" / "refs"
    if not refs.is_dir():
        return []
    return sorted(
        p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()
    )


def hub_error(exc: BaseException, model: HubModel, filename: str) -> GptkitError:
    """A one-line explanation of a ``huggingface_hub`` error."""
    from huggingface_hub import utils as errors  # re-exports them in every version

    what = f"{filename} of {model}"
    revision = model.revision or "main"
    if isinstance(exc, errors.GatedRepoError):
        return GptkitError(
            f"{model.repo_id} is gated: accept its license on huggingface.co and log"
            " in (hf auth login)"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return GptkitError(
            f"no model repository {model.repo_id} on the Hugging Face Hub (or it is"
            " private: log in with hf auth login)"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return GptkitError(f"{model.repo_id} has no revision {revision!r}")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        cached = _cached_revisions(model)
        if cached and not _COMMIT.match(revision) and revision not in cached:
            problem = (
                f"revision {revision!r} of {model.repo_id} is not in the Hugging Face"
                f" cache (cached: {', '.join(cached)})"
            )
        else:
            problem = f"{what} is not in the Hugging Face cache ({cache_dir()})"
        reason = (
            "HF_HUB_OFFLINE is set"
            if _offline()
            else "the Hub cannot be reached (no network?)"
        )
        return GptkitError(
            f"{problem} and {reason}; fetch it once online with"
            f" `gptkit download {model.repo_id}"
            + (f" --revision {model.revision}" if model.revision else "")
            + "`"
        )
    if isinstance(exc, errors.EntryNotFoundError):
        hint = ""
        if filename == WEIGHTS:
            hint = (
                " (gptkit reads safetensors only: pickle files such as"
                " pytorch_model.bin can run code)"
            )
        return GptkitError(f"{model} has no file {filename}{hint}")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return GptkitError(f"{what} is not cached and HF_HUB_OFFLINE is set")
    if isinstance(exc, errors.HFValidationError):
        return GptkitError(f"invalid Hub repository or revision {model}: {exc}")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return GptkitError(
            f"the Hugging Face Hub refused {what} (HTTP {status}): {first}"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return GptkitError(f"could not fetch {what}: {type(exc).__name__}: {first}")


def fetch(model: HubModel, filename: str) -> Path:
    """The local path of ``filename`` of ``model``: from the cache, else
    downloaded into it (with a progress bar). Errors are :class:`GptkitError`."""
    import logging

    import huggingface_hub

    # The Hub logs each retry of an unreachable server as a warning; the error
    # that follows says it in one line.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(max(level, logging.ERROR))
    try:
        path = huggingface_hub.hf_hub_download(
            model.repo_id, filename, revision=model.revision
        )
    except Exception as exc:  # the Hub, HTTP clients and the disk raise many kinds
        raise hub_error(exc, model, filename) from None
    finally:
        hub_logger.setLevel(level)
    return Path(path)


def snapshot_commit(path: Path) -> str | None:
    """The commit a cached file belongs to (``.../snapshots/<commit>/file``)."""
    parts = path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _COMMIT.match(parts[i + 1]):
            return parts[i + 1]
    return None
