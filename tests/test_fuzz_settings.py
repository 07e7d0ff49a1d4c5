"""Property-based tests of every setting (issue 22): strategies built from the
``setting()`` and component ``Options`` declarations (tests/fuzz_settings.py)
drive ``gptkit.load``, ``LanguageModel.generate``/``evaluate``,
``gptkit.train`` and the command line on a tiny model. Any value works or is
refused with a ``GptkitError`` (exit 2 and one ``gptkit: error:`` line on the
command line): never another exception, a traceback, a hang past the
per-example deadline, or (the Python examples) peak memory past the memory
preflight's estimate for the example (``PreflightWatch``: 1.5 x the estimate +
64 MiB; a refused example must stay within that of what it estimated, or of
nothing).

CI runs a few examples of each; ``pytest tests/test_fuzz_settings.py
--hypothesis-profile=long`` runs many more (see docs/reliability.md).
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gptkit
from gptkit.api.settings import EvalSettings, GenerateSettings, LoadSettings
from gptkit.core.settings import TrainSettings, flag_of
from gptkit.errors import GptkitError
from tests.fuzz_settings import (
    PreflightWatch,
    declared_fields,
    field_values,
    flag_value,
    settings_dicts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The long profile (--hypothesis-profile=long) multiplies every count.
LONG = settings.default.max_examples >= 1000


def examples(ci: int) -> settings:
    return settings(
        max_examples=ci * 10 if LONG else ci,
        deadline=timedelta(seconds=60),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not LONG,  # CI: the same examples every run
        database=None,
    )


def _names(kind: str) -> tuple[str, ...]:
    from gptkit.core.registry import get_registry, reset_registry

    names = tuple(getattr(get_registry(), kind).names())
    reset_registry()
    return names


SAMPLERS = _names("samplers")
SCHEDULERS = _names("schedulers")
LOGGERS = tuple(n for n in _names("loggers") if n != "tensorboard")  # slow import
MEMORY = "512MB"  # the preflight refuses big work quickly instead of running it


#: (test, peak growth, largest estimate) of every example, for the summary.
MEMORY_SEEN: list[tuple[str, int, int]] = []


def works_or_refuses(call: Any) -> Any:
    """``call()``'s result, or None when it raised a one-line GptkitError;
    either way its peak memory stays within the preflight's estimate."""
    watch = PreflightWatch()
    try:
        with watch:
            return call()
    except GptkitError as exc:
        text = str(exc).strip()
        assert text, f"{type(exc).__name__} without a message"
        return None
    finally:
        if watch.growth is not None:
            MEMORY_SEEN.append((_current_test(), watch.growth, watch.estimate))
        watch.check()


def _current_test() -> str:
    import os

    return os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]


@pytest.fixture(scope="module", autouse=True)
def memory_summary():
    """Print the examples' peak memory against their estimates (pytest -s)."""
    yield
    if MEMORY_SEEN:
        worst = max(MEMORY_SEEN, key=lambda r: r[1] - r[2])
        print(
            f"\nmemory: {len(MEMORY_SEEN)} examples measured; the largest growth"
            f" over its estimate: {worst[0]} grew {worst[1] / 2**20:.1f} MiB,"
            f" estimated {worst[2] / 2**20:.1f} MiB"
        )


@pytest.fixture(scope="module")
def lm():
    return gptkit.load(preset="tiny", device="cpu", max_memory=MEMORY, seed=0)


@pytest.fixture(scope="module")
def checkpoint(lm, tmp_path_factory):
    from gptkit.core.checkpoints.native import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 1, lm.model, lm.config)


# -- Python ------------------------------------------------------------------


@examples(25)
@given(
    settings_dicts(
        GenerateSettings,
        skip=("draft",),
        names={"sampler": SAMPLERS, "stop": ("the", "\n", "ab")},
    )
)
def test_generate_settings(lm, values):
    values.setdefault("max_new_tokens", 3)
    out = works_or_refuses(lambda: lm.generate("Every effort moves", **values))
    assert out is None or isinstance(out, str | list)


@st.composite
def sampler_options(draw: Any) -> tuple[str, dict[str, Any]]:
    from gptkit.core.registry import get_registry

    name = draw(st.sampled_from(SAMPLERS))
    options_cls = get_registry().samplers.get(name).Options
    fields = declared_fields(options_cls)
    chosen = draw(st.lists(st.sampled_from(sorted(fields) or ["x"]), max_size=3))
    opts = {
        key: draw(field_values(*fields[key])) if key in fields else 1
        for key in dict.fromkeys(chosen)
    }
    return name, opts


@examples(25)
@given(sampler_options())
def test_sampler_options(lm, choice):
    name, opts = choice
    out = works_or_refuses(
        lambda: lm.generate(
            "Every effort moves", sampler=name, options=opts, max_new_tokens=3
        )
    )
    assert out is None or isinstance(out, str | list)


@examples(12)
@given(settings_dicts(LoadSettings, skip=("compile",)))
def test_load_settings(values):
    values.setdefault("preset", "tiny")
    values.setdefault("device", "cpu")
    values.setdefault("max_memory", MEMORY)
    loaded = works_or_refuses(lambda: gptkit.load(**values))
    if loaded is not None:
        works_or_refuses(lambda: loaded.generate("a", max_new_tokens=2))


_EVALUATE = ("context_length", "batch_size", "stride", "train_ratio", "eval_iter")


@examples(10)
@given(
    settings_dicts(
        EvalSettings,
        skip=tuple(n for n in EvalSettings.names() if n not in (*_EVALUATE, "seed")),
    )
)
def test_evaluate_settings(lm, values):
    values.setdefault("eval_iter", 1)
    out = works_or_refuses(lambda: lm.evaluate("the-verdict", **values))
    assert out is None or out["val_loss"] > 0


_runs = itertools.count()


@examples(3)
@given(
    settings_dicts(
        TrainSettings,
        skip=("out", "compile", "device"),
        names={
            "corpus": ("the-verdict",),
            "sampler": SAMPLERS,
            "scheduler": SCHEDULERS,
            "loggers": LOGGERS,
        },
        max_size=2,
    )
)
def test_train_settings(tmp_path_factory, values):
    base = {
        "preset": "tiny",
        "corpus": "the-verdict",
        "context_length": 16,
        "max_steps": 1,
        "eval_iter": 1,
        "max_new_tokens": 2,
        "loggers": ["jsonl"],
        "device": "cpu",
        "max_memory": MEMORY,
    }
    out = tmp_path_factory.getbasetemp() / f"fuzz-run-{next(_runs)}"
    run = works_or_refuses(lambda: gptkit.train(**{**base, **values}, out=str(out)))
    if run is not None:
        assert run.checkpoints


# -- the command line ------------------------------------------------------------


def _flag_args(cls: type, values: dict[str, Any]) -> list[str]:
    fields = cls.field_map()
    args: list[str] = []
    for name, value in values.items():
        flag = flag_of(fields[name])
        if isinstance(value, tuple | list):
            for item in value or [""]:
                args += [flag, flag_value(item)]
        elif isinstance(value, dict):
            for key, item in value.items() or [("", "")]:
                args += [flag, f"{key}={flag_value(item)}"]
        elif value is None:
            args += [flag, "none"]
        else:
            args += [flag, flag_value(value)]
    return args


def assert_one_line_or_success(result: Any) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("gptkit: error: "), lines[0]


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from gptkit.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


_CLI_GENERATE = tuple(
    n
    for n in GenerateSettings.names()
    if n not in ("draft", "truncate")  # a path; a --truncate/--no-truncate switch
)


@examples(15)
@given(
    settings_dicts(
        GenerateSettings,
        skip=tuple(n for n in GenerateSettings.names() if n not in _CLI_GENERATE),
        names={"sampler": SAMPLERS, "stop": ("the", "ab")},
    )
)
def test_cli_generate_flags(checkpoint, values):
    values.setdefault("max_new_tokens", 3)
    args = _flag_args(GenerateSettings, values)
    result = _cli(
        "generate", "--weights", str(checkpoint), "--max-memory", MEMORY, *args, "Hi"
    )
    assert_one_line_or_success(result)


_CLI_TRAIN = (
    "epochs",
    "lr",
    "weight_decay",
    "eval_freq",
    "batch_size",
    "stride",
    "train_ratio",
    "seed",
    "grad_accum",
    "max_norm",
    "data_order",
    "precision",
    "scheduler",
    "checkpoint_every",
    "keep_last",
    "emb_dim",
    "n_heads",
    "drop_rate",
)


@examples(4)
@given(
    settings_dicts(
        TrainSettings,
        skip=tuple(n for n in TrainSettings.names() if n not in _CLI_TRAIN),
        names={"scheduler": SCHEDULERS},
        max_size=2,
    )
)
def test_cli_train_flags(tmp_path_factory, values):
    out = tmp_path_factory.getbasetemp() / f"fuzz-cli-run-{next(_runs)}"
    result = _cli(
        *("train", "--preset", "tiny", "--corpus", "the-verdict", "--device", "cpu"),
        *("--context-length", "16", "--max-steps", "2", "--eval-iter", "1"),
        *("--max-new-tokens", "0", "--logger", "jsonl", "--max-memory", MEMORY),
        *_flag_args(TrainSettings, values),
        *("--out", str(out)),
    )
    assert_one_line_or_success(result)


def test_the_memory_check_bites():
    """PreflightWatch fails an example that allocates past what the preflight
    passed (here: 256 MiB with no estimate), and passes it with the estimate."""
    import torch

    from gptkit.runs import preflight

    def allocate(estimate: int | None) -> PreflightWatch:
        watch = PreflightWatch()
        with watch:
            if estimate is not None:
                est = preflight.MemoryEstimate("a test")
                est.add("block", estimate)
                preflight.check_memory(est, "cpu")
            block = torch.ones(64 * 2**20)  # 256 MiB, touched
            del block
        return watch

    unannounced = allocate(None)
    if unannounced.growth is None:
        pytest.skip("peak RSS cannot be reset here (not Linux)")
    with pytest.raises(AssertionError, match="x the preflight estimate"):
        unannounced.check()
    allocate(256 * 2**20).check()
