"""Component options: a nested frozen dataclass per component, validated here.

A field declares its help text and bounds in ``metadata``::

    @dataclass(frozen=True)
    class Options:
        temperature: float = field(
            default=1.0, metadata={"help": "softmax temperature", "ge": 0.0}
        )

Recognised metadata: ``help``, ``ge``, ``gt``, ``le``, ``lt``, ``choices``. Values
may be Python objects or strings from the command line (``-o temperature=0.8``);
strings are converted to the field's type. A ``validate(self)`` method on the
class runs last, for checks across fields.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from gptkit.errors import OptionError, SettingError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (the CLI's ``-o`` values)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"option {pair!r} is not of the form key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def convert_value(value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` names (strings from the command line
    are parsed: ``"0.8"`` -> 0.8, ``"true"`` -> True, ``"a,b"`` -> a tuple,
    ``"none"`` -> None where the type allows it).

    :raises ValueError: naming the value and the type it is not.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.lower() in _NONE and type(None) in args:
            return None
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert_value(value, inner[0])
    if origin in (tuple, list):
        if isinstance(value, str):  # "a,b" from a command line
            items = [v for v in value.split(",") if v != ""]
        else:
            items = list(value)
        inner = args[0] if args else str
        converted = [convert_value(v, inner) for v in items]
        return tuple(converted) if origin is tuple else converted
    if origin is dict or annotation is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ValueError(f"{value!r} is not a mapping")
    if annotation is typing.Any:
        return value
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if annotation is int:
            if isinstance(value, bool) or (
                isinstance(value, float) and not value.is_integer()
            ):
                raise ValueError
            return int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if annotation is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ValueError(f"{value!r} is not a valid {name}") from None
    return value


def bounds_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under the field metadata's bounds
    (``ge``, ``gt``, ``le``, ``lt``, ``choices``), or None."""
    if value is None:
        return None
    checks = (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    )
    for name, ok, symbol in checks:
        if name in meta and not ok(value, meta[name]):
            return f"must be {symbol} {meta[name]}, got {value}"
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}, got {value!r}"
    return None


def _convert(value: Any, annotation: Any, key: str, owner: str) -> Any:
    try:
        return convert_value(value, annotation)
    except ValueError as exc:
        raise OptionError(f"option {key} of {owner}: {exc}") from None


def _check_bounds(value: Any, meta: Mapping[str, Any], key: str, owner: str) -> None:
    problem = bounds_problem(value, meta)
    if problem is not None:
        raise OptionError(f"option {key} of {owner} {problem}")


def build_options(options_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """Instantiate ``options_cls`` from ``values``, converting and validating.

    :param owner: how to name the component in errors, e.g. ``"sampler top-k"``.
    :raises OptionError: an unknown key (the message lists the valid ones) or a
        value of the wrong type or out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise OptionError(
            f"unknown option {', '.join(unknown)} for {owner}; valid options: {valid}"
        )
    hints = typing.get_type_hints(options_cls)
    kwargs = {}
    for key, raw in values.items():
        value = _convert(raw, hints[key], key, owner)
        _check_bounds(value, fields[key].metadata, key, owner)
        kwargs[key] = value
    try:
        options = options_cls(**kwargs)
    except OptionError:
        raise
    except (TypeError, ValueError) as exc:
        raise OptionError(f"options of {owner}: {exc}") from None
    for f in fields.values():  # defaults must respect the bounds too
        _check_bounds(getattr(options, f.name), f.metadata, f.name, owner)
    validate = getattr(options, "validate", None)
    if callable(validate):
        try:
            validate()
        except OptionError:
            raise
        except ValueError as exc:
            raise OptionError(f"options of {owner}: {exc}") from None
    return options


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]*)\s*$", re.I)


def parse_size(text: str | int | float) -> int:
    """``"8GB"``, ``"512MiB"``, ``"1.5e9"`` or a number of bytes -> bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise SettingError(
                f"{{max_memory}}: cannot read {text!r} as a size (e.g. 8GB, 512MiB)"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise SettingError(f"{{max_memory}} must be positive, got {text!r}")
    return size
