"""Hypothesis strategies built from the settings declarations themselves.

Every field declared with :func:`gptkit.core.settings.setting` (and every
component ``Options`` field) carries its type, bounds (``ge``, ``gt``, ``le``,
``lt``) and ``choices``; :func:`field_values` turns that declaration into a
strategy that mixes values inside the declared range with the values a hostile
or careless caller sends: each bound and its neighbours, the ends of int64, NaN
and the infinities, the smallest subnormal, ``None``, values of the wrong type,
odd strings. The property checked with them (tests/test_fuzz_settings.py): any
value either works or is refused with a ``GptkitError`` (one line, exit 2 on
the command line) — never another exception, a traceback or a hang.

A declaration can only say what is valid, not what is cheap: valid amounts of
work are drawn small (``WORK_CAP`` above the lower bound) so an example runs in
seconds; huge amounts are drawn from the edge values, where the memory
preflight or the bounds must refuse them quickly.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from hypothesis import strategies as st

#: Valid integers are drawn from [lower bound, lower bound + WORK_CAP].
WORK_CAP = 6

EDGE_INTS = (
    -1,
    0,
    1,
    2,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**40,
)
EDGE_FLOATS = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    5e-324,
    -5e-324,
    1e-300,
    1e-30,
    0.5,
    0.999999,
    1.000001,
    1e30,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
)
ODD_STRINGS = (
    "",
    " ",
    "none",
    "null",
    "true",
    "-1",
    "1e999",
    "nan",
    "inf",
    "0x10",
    "\ud800",
    "\x00",
    "a" * 300,
    "²",
    "1_0",
    "../..",
    "hf:",
    "book:",
    "/dev/zero",
)
WRONG_TYPES = st.sampled_from(
    [None, True, False, [], {}, ["a"], {"a": 1}, 1.5, object(), b"bytes", (1, 2)]
)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _low(meta: dict[str, Any]) -> float | None:
    if "ge" in meta:
        return meta["ge"]
    if "gt" in meta:
        return meta["gt"]
    return None


def _high(meta: dict[str, Any]) -> float | None:
    if "le" in meta:
        return meta["le"]
    if "lt" in meta:
        return meta["lt"]
    return None


def _ints(meta: dict[str, Any]) -> st.SearchStrategy[Any]:
    low = _low(meta)
    start = 0 if low is None else math.floor(low) + ("gt" in meta)
    high = _high(meta)
    stop = start + WORK_CAP if high is None else min(start + WORK_CAP, int(high))
    edges = {*EDGE_INTS}
    for bound in (_low(meta), _high(meta)):
        if bound is not None:
            edges |= {int(bound) - 1, int(bound), int(bound) + 1}
    return st.one_of(
        st.integers(start, max(start, stop)),
        st.sampled_from(sorted(edges)),
        st.sampled_from(sorted(edges)).map(str),  # as a command line gives it
    )


def _floats(meta: dict[str, Any]) -> st.SearchStrategy[Any]:
    low, high = _low(meta), _high(meta)
    inside = st.floats(
        min_value=0.0 if low is None else float(low),
        max_value=(float(low or 0.0) + 4.0) if high is None else float(high),
        exclude_min="gt" in meta,
        exclude_max="lt" in meta,
        allow_nan=False,
    )
    edges = list(EDGE_FLOATS)
    for bound in (low, high):
        if bound is not None:
            b = float(bound)
            edges += [b, math.nextafter(b, -math.inf), math.nextafter(b, math.inf)]
    return st.one_of(inside, st.sampled_from(edges), st.sampled_from(edges).map(repr))


def field_values(
    hint: Any, meta: dict[str, Any], names: tuple[str, ...] = ()
) -> st.SearchStrategy[Any]:
    """Values for a field of type ``hint`` with the declaration's ``meta``;
    ``names``: valid names for a free-text field that names a component."""
    inner, optional = _unwrap(hint)
    origin = typing.get_origin(inner)
    wrong = st.one_of(WRONG_TYPES, st.sampled_from(ODD_STRINGS))
    if meta.get("choices") is not None:
        good = st.sampled_from(tuple(meta["choices"]))
    elif inner is bool:
        good = st.one_of(st.booleans(), st.sampled_from(["yes", "off", "1"]))
    elif inner is int:
        good = _ints(meta)
    elif inner is float:
        good = _floats(meta)
    elif inner is str:
        good = st.sampled_from(names) if names else st.text(max_size=12)
    elif origin in (tuple, list):
        item = st.sampled_from(names) if names else st.text(max_size=8)
        good = st.lists(item, max_size=3).map(tuple)
    elif origin is dict or inner is dict:
        good = st.dictionaries(st.text(max_size=8), st.integers(-2, 2), max_size=2)
    else:  # objects only Python gives: the wrong types alone
        good = st.nothing()
    choices = [good, good, wrong]
    if optional:
        choices.append(st.none())
    return st.one_of(*choices)


def declared_fields(cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """name -> (type hint, metadata) of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], dict(f.metadata))
        for f in dataclasses.fields(cls)
        if f.name not in skip
    }


def settings_dicts(
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    names: dict[str, tuple[str, ...]] | None = None,
    max_size: int = 3,
) -> st.SearchStrategy[dict[str, Any]]:
    """A few of ``cls``'s settings at once, each from its declaration."""
    fields = declared_fields(cls, skip)
    names = names or {}
    per_field = {
        name: field_values(hint, meta, names.get(name, ()))
        for name, (hint, meta) in fields.items()
    }
    return st.lists(
        st.sampled_from(sorted(per_field)), min_size=1, max_size=max_size, unique=True
    ).flatmap(lambda chosen: st.fixed_dictionaries({k: per_field[k] for k in chosen}))


def flag_value(value: Any) -> str:
    """A value as a command line would carry it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# -- memory: never past the preflight estimate --------------------------------

#: What an example may use beyond the largest estimate the preflight checked:
#: a factor for the estimate's approximations (activations and temporaries are
#: modelled, not traced; and gptkit keeps freed large blocks in the heap,
#: system/allocator.py, where they fragment. Measured on the tiny model:
#: generation past the context matches its estimate alone, and reaches 1.5x
#: after beam searches in the same process; training up to 1.6x; an
#: evaluation under pytest one more copy of the logits than estimated) and a
#: fixed allowance for what no estimate covers (the first call of a path:
#: imports, the corpus, the tokenizer's caches, ~35 MiB; torch's per-operator
#: workspaces; the allocator's arenas). The faults this guards against are orders of
#: magnitude (a beam count that allocates gigabytes past a small estimate).
MEMORY_FACTOR = 1.5
MEMORY_SLACK = 64 * 2**20


def _status_bytes(key: str) -> int:
    import re
    from pathlib import Path

    text = Path("/proc/self/status").read_text()
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


class PreflightWatch:
    """Peak resident memory of one example against the memory preflight's
    estimates for it.

    On entry it returns freed heap to the system (``malloc_trim``) and resets
    the process's peak RSS (``VmHWM``; writing 5 to ``/proc/self/clear_refs``,
    Linux 4.0+), so the peak read on exit is this example's, not the
    process's; and it records every estimate :func:`check_memory` is given
    (the settings' own preflight, called before anything large is allocated)
    and passed: a refused estimate allows nothing, since the work it describes
    must not have started.
    ``growth`` is the peak minus the RSS at entry: the example's memory, model
    loads and tensors included (torch's CPU allocations are invisible to
    tracemalloc, so resident memory is what is measured)."""

    def __init__(self) -> None:
        self.estimates: list[Any] = []
        self.growth: int | None = None
        self.supported = True

    def __enter__(self) -> PreflightWatch:
        import ctypes
        import ctypes.util
        from unittest import mock

        import gptkit.runs.preflight as preflight

        real = preflight.check_memory

        def recording(estimate: Any, *args: Any, **kwargs: Any) -> None:
            real(estimate, *args, **kwargs)  # a refusal: nothing of it counts
            self.estimates.append(estimate)

        self._patch = mock.patch.object(preflight, "check_memory", recording)
        self._patch.start()
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except (OSError, AttributeError):
            self.supported = False  # not Linux/glibc: nothing to measure
        self._start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._patch.stop()
        if self.supported and _status_bytes("VmHWM") >= self._start:
            self.growth = _status_bytes("VmHWM") - self._start

    @property
    def estimate(self) -> int:
        """The largest estimate the preflight passed (0: none, e.g. refused)."""
        return max((e.total for e in self.estimates), default=0)

    def check(self) -> None:
        """The example stayed within its estimate (with the stated slack)."""
        if self.growth is None:
            return
        allowed = MEMORY_FACTOR * self.estimate + MEMORY_SLACK
        what = ", ".join(
            f"{e.what}: {e.total / 2**20:.1f} MiB ({e.breakdown()})"
            for e in self.estimates
        )
        assert self.growth <= allowed, (
            f"peak memory grew {self.growth / 2**20:.1f} MiB, past"
            f" {MEMORY_FACTOR} x the preflight estimate + {MEMORY_SLACK >> 20} MiB"
            f" = {allowed / 2**20:.1f} MiB; estimates: {what or 'none'}"
        )
