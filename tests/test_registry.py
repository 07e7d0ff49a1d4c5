"""The plugin registry: built-ins, entry-point plugins, errors, laziness.

Each hook has a ``test_hook_<name>`` here (enforced by test_hooks_have_tests).
"""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass

import click
import pytest

from gptkit import hookimpl
from gptkit.core import hookspecs
from gptkit.core.interfaces import (
    Component,
    Corpus,
    Logger,
    Quantizer,
    Sampler,
    Scheduler,
    WeightLoader,
)
from gptkit.core.registry import build_registry, report_errors
from gptkit.errors import GptkitError, PluginError


def plugin(**hooks) -> types.SimpleNamespace:
    """A throwaway plugin object whose hooks return the given values."""
    ns = types.SimpleNamespace()
    for name, value in hooks.items():

        def impl(value=value):
            return value

        impl.__name__ = name
        setattr(ns, name, hookimpl(impl))
    return ns


class Argmax2(Sampler):
    name = "argmax2"
    summary = "test sampler"
    deterministic = True


class Half(Scheduler):
    name = "half"
    summary = "half the lr"

    def lr_at(self, step, total_steps, base_lr):
        return base_lr / 2


class Fake(WeightLoader):
    name = "fake"


class Quiet(Logger):
    name = "quiet"


class Letters(Corpus):
    name = "letters"

    def documents(self):
        yield "abc"


def test_builtins_are_registered():
    reg = build_registry(entry_points=False)
    assert {"greedy", "top-k"} <= set(reg.samplers.names())
    assert {"constant", "warmup-cosine", "linear", "warmup-stable-decay"} <= set(
        reg.schedulers.names()
    )
    assert "native" in reg.loaders.names()
    assert {"console", "jsonl", "plot"} <= set(reg.loggers.names())
    assert {"python-docs", "the-verdict", "files"} <= set(reg.corpora.names())
    assert all(info.builtin and info.dist == "gptkit" for info in reg.plugins)
    assert not reg.errors


def test_hook_register_samplers():
    reg = build_registry(
        entry_points=False, extra_plugins={"p": plugin(register_samplers=[Argmax2])}
    )
    assert reg.samplers.get("argmax2") is Argmax2
    assert reg.samplers.entry("argmax2").plugin == "p"


def test_hook_register_schedulers():
    lazy = Component("half", f"{__name__}:Half", "lazy")
    reg = build_registry(
        entry_points=False, extra_plugins={"p": plugin(register_schedulers=[lazy])}
    )
    assert reg.schedulers.create("half").lr_at(0, 10, 1.0) == 0.5


def test_hook_register_weight_loaders():
    reg = build_registry(
        entry_points=False, extra_plugins={"p": plugin(register_weight_loaders=[Fake])}
    )
    assert reg.loaders.get("fake") is Fake


def test_hook_register_loggers():
    reg = build_registry(
        entry_points=False,
        extra_plugins={"p": plugin(register_loggers=[f"{__name__}:Quiet"])},
    )
    assert reg.loggers.get("quiet") is Quiet


def test_hook_register_corpora():
    reg = build_registry(
        entry_points=False, extra_plugins={"p": plugin(register_corpora=[Letters])}
    )
    assert list(reg.corpora.create("letters").documents()) == ["abc"]


class Halves(Quantizer):
    name = "halves"
    summary = "test quantizer"

    def quantize_linear(self, linear, name):
        return linear


def test_hook_register_quantizers():
    reg = build_registry(
        entry_points=False,
        extra_plugins={"p": plugin(register_quantizers=[f"{__name__}:Halves"])},
    )
    assert reg.quantizers.get("halves") is Halves
    assert {"int8", "int4"} <= set(reg.quantizers.names())
    assert reg.quantizers.entry("int8").plugin == "gptkit.plugins.quantizers"


def test_hook_register_commands():
    from gptkit.core.registry import add_plugin_commands

    @click.command("hello")
    def hello():
        click.echo("hi")

    @hookimpl
    def register_commands(cli):
        cli.add_command(hello)

    reg = build_registry(
        entry_points=False,
        extra_plugins={"p": types.SimpleNamespace(register_commands=register_commands)},
    )
    group = click.Group()
    add_plugin_commands(reg, group)
    assert group.commands["hello"] is hello


def test_hooks_have_tests():
    names = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert len(names) == 7
    for name in names:
        assert f"test_hook_{name}" in globals(), f"hook {name} has no test"


def test_duplicate_name_keeps_the_first_and_names_both_plugins():
    @dataclass
    class Clash(Sampler):
        name = "greedy"

    reg = build_registry(
        entry_points=False, extra_plugins={"dup": plugin(register_samplers=[Clash])}
    )
    assert reg.samplers.entry("greedy").plugin == "gptkit.plugins.samplers"
    [error] = reg.errors
    assert "dup" in str(error) and "gptkit.plugins.samplers (gptkit)" in str(error)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([object()], "must be a class or a Component"),
        ([Component("Bad Name", "x:y")], "not lowercase"),
        ([Component("ok", "no_such_module_xyz:Thing")], None),
    ],
)
def test_malformed_components_are_reported(value, message):
    reg = build_registry(
        entry_points=False, extra_plugins={"bad": plugin(register_samplers=value)}
    )
    if message:
        assert message in str(reg.errors[0])
    else:  # a lazy target fails only when used, with a clear error
        with pytest.raises(PluginError, match="failed to import"):
            reg.samplers.get("ok")


def test_misspelled_hook_is_rejected():
    reg = build_registry(
        entry_points=False, extra_plugins={"typo": plugin(register_sampler=[Argmax2])}
    )
    assert "invalid hook" in str(reg.errors[0])
    assert "typo" not in [info.name for info in reg.plugins]


def test_strict_mode_raises_and_lenient_mode_reports(monkeypatch, capsys):
    reg = build_registry(
        entry_points=False, extra_plugins={"bad": plugin(register_samplers=[1])}
    )
    with pytest.raises(PluginError, match="GPTKIT_STRICT_PLUGINS"):
        report_errors(reg)
    monkeypatch.delenv("GPTKIT_STRICT_PLUGINS")
    report_errors(reg)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin bad" in err and "GPTKIT_LOAD_PLUGINS" in err


def test_unknown_component_lists_the_valid_names():
    reg = build_registry(entry_points=False)
    with pytest.raises(
        GptkitError, match="unknown sampler 'nope'; choose one of: greedy, top-k"
    ):
        reg.samplers.get("nope")


def _imports_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_registry_and_listing_import_no_heavy_library():
    mods = _imports_after(
        "from gptkit.core.registry import get_registry\n"
        "r = get_registry()\n"
        "[r.kind(k).names() for k in ('samplers', 'loaders', 'corpora')]"
    )
    assert not {"torch", "tiktoken", "huggingface_hub"} & mods


def test_a_string_target_is_listed_from_its_source_without_importing(
    tmp_path, monkeypatch
):
    """A component says its name and summary once, in its class; the registry
    reads them without importing the module (which may import torch)."""
    (tmp_path / "gk_lazy_sampler.py").write_text(
        "IMPORTED = True\n"
        "from gptkit.core.interfaces import Sampler\n\n"
        "class Lazy(Sampler):\n"
        '    name = "lazy-argmax"\n'
        '    summary = "Listed without importing."\n'
        "    deterministic = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registry(
        entry_points=False,
        extra_plugins={"p": plugin(register_samplers=["gk_lazy_sampler:Lazy"])},
    )
    entry = reg.samplers.entry("lazy-argmax")
    assert entry.summary == "Listed without importing."
    assert "gk_lazy_sampler" not in sys.modules
    assert reg.samplers.get("lazy-argmax").__name__ == "Lazy"
    assert "gk_lazy_sampler" in sys.modules
    sys.modules.pop("gk_lazy_sampler")


def test_a_component_whose_class_says_another_name_is_refused():
    reg = build_registry(
        entry_points=False,
        extra_plugins={
            "p": plugin(
                register_samplers=[Component("other", f"{__name__}:Argmax2", "x")]
            )
        },
    )
    with pytest.raises(PluginError, match="its class says 'argmax2'"):
        reg.samplers.get("other")
