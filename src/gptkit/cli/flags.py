"""Command-line options built from the settings dataclasses, and the helpers
commands share. Torch-free at import time.

A settings field (:mod:`gptkit.core.settings`) becomes an option with its name in
dashes (or its ``flag``), its help, type, bounds and default; a command passes
on only the options given on its command line (:func:`given_settings`), so the
defaults live in one place.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from gptkit.api.settings import (
    DEVICES,
    PRESET_NAMES,
    Settings,
    flag_of,
)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "PRESET_NAMES",
    "comma_option",
    "device_option",
    "echo_json",
    "given_settings",
    "settings_options",
    "switch_option",
    "was_given",
]

_GIVEN = (
    click.core.ParameterSource.COMMANDLINE,
    click.core.ParameterSource.ENVIRONMENT,
)


def _stack(decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def _plain(hint: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return inner[0], len(inner) < len(args)
    return hint, False


def _click_type(hint: Any, meta: dict[str, Any]) -> Any:
    if meta.get("choices") is not None:
        return click.Choice([str(c) for c in meta["choices"]])
    bounds = {
        "min": meta.get("ge", meta.get("gt")),
        "max": meta.get("le", meta.get("lt")),
        "min_open": "gt" in meta,
        "max_open": "lt" in meta,
    }
    if hint is int and (bounds["min"] is not None or bounds["max"] is not None):
        return click.IntRange(**bounds)
    if hint is float and (bounds["min"] is not None or bounds["max"] is not None):
        return click.FloatRange(**bounds)
    return {int: int, float: float, str: str}.get(hint, str)


def _option(f: dataclasses.Field[Any], hint: Any, default: Any) -> Callable[[F], F]:
    meta = dict(f.metadata)
    flag = flag_of(f)
    decls = [flag] + ([f"-{meta['short']}"] if meta.get("short") else [])
    help_text = meta["help"]
    kwargs: dict[str, Any] = {"help": help_text, "metavar": meta.get("metavar")}
    plain, optional = _plain(hint)
    origin = typing.get_origin(plain)
    if meta.get("default_help"):
        kwargs["help"] = f"{help_text} [default: {meta['default_help']}]"
    if plain is bool:
        if optional or default is True:  # --x/--no-x: None means "not given"
            decls = [f"{flag}/--no-{flag[2:]}"]
            kwargs["default"] = None if optional else default
        else:
            kwargs.update(default=default, is_flag=True)
    elif origin in (tuple, list):
        inner = typing.get_args(plain)[0] if typing.get_args(plain) else str
        kwargs.update(multiple=True, type=_click_type(inner, meta), default=default)
    elif plain is dict or origin is dict:
        kwargs.update(multiple=True, type=str, default=())
        kwargs["metavar"] = kwargs["metavar"] or "KEY=VALUE"
    else:
        kwargs.update(type=_click_type(plain, meta), default=default)
    empty = default is None or default is False or default in ((), [], {})
    if not meta.get("default_help") and not empty:
        kwargs["show_default"] = True
    return click.option(*decls, f.name, **kwargs)


def settings_options(
    cls: type[Settings],
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Click options for the fields of ``cls`` (``only`` some, in that order;
    or all but ``exclude``); ``defaults`` replaces a field's default."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else list(by_name)
    unknown = [n for n in [*names, *exclude] if n not in by_name]
    if unknown:
        raise ValueError(f"{cls.__name__} has no setting {unknown[0]}")
    decorators = []
    for name in names:
        f = by_name[name]
        if name in exclude or not f.metadata.get("cli", True):
            continue
        default = (defaults or {}).get(name, _default(f))
        decorators.append(_option(f, hints[name], default))
    return _stack(decorators)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return () if isinstance(value, dict) else value
    return None


def _field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    if name not in by_name:
        raise ValueError(f"{cls.__name__} has no setting {name}")
    return by_name[name]


def comma_option(cls: type[Any], name: str) -> Callable[[F], F]:
    """A list setting given as one comma-separated value (``--samplers a,b``);
    its default is the field's, joined. The command splits the text."""
    f = _field(cls, name)
    meta = f.metadata
    default = _default(f)
    text = ",".join(str(v) for v in default) if default else None
    help_text = meta["help"]
    if meta.get("default_help"):
        help_text = f"{help_text} [default: {meta['default_help']}]."
    return click.option(
        flag_of(f),
        name,
        default=text,
        show_default=text is not None,
        metavar=meta.get("metavar"),
        help=help_text,
    )


def switch_option(cls: type[Any], name: str) -> Callable[[F], F]:
    """A bool setting as ``--x/--no-x`` with the field's default."""
    f = _field(cls, name)
    flag = flag_of(f)
    return click.option(
        f"{flag}/--no-{flag[2:]}",
        name,
        default=_default(f),
        show_default=True,
        help=f.metadata["help"],
    )


def was_given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` came from the command line (or environment)."""
    return ctx.get_parameter_source(name) in _GIVEN


def given_settings(
    ctx: click.Context, opts: dict[str, Any], cls: type[Settings]
) -> dict[str, Any]:
    """The settings of ``cls`` given on the command line (not defaults), as
    keyword values: ``KEY=VALUE`` pairs become a dict."""
    from gptkit.api.settings import parse_pairs

    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in opts or ctx.get_parameter_source(f.name) not in _GIVEN:
            continue
        value = opts[f.name]
        plain, _ = _plain(hints[f.name])
        if plain is dict or typing.get_origin(plain) is dict:
            value = parse_pairs(value)
        out[f.name] = value
    return out


def device_option(f: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(list(DEVICES)),
        default="auto",
        show_default=True,
        help="auto: CUDA, then Apple MPS, then CPU.",
    )(f)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))
