"""docs/plugins.md is a tested contract (datasette's approach): every hook spec
has a section headed by its exact signature, every method of the component
interfaces is documented with its signature, and so are the plugin environment
variables and the ``gptkit.testing`` fixtures and checks."""

from __future__ import annotations

import ast
import inspect
import re

import pluggy
import pytest

import gptkit.testing
from gptkit.core import hookspecs, interfaces, registry
from tests.conftest import REPO

DOCS = REPO / "docs" / "plugins.md"
TEXT = DOCS.read_text(encoding="utf-8")
HEADINGS = {
    line.lstrip("#").strip().strip("`")
    for line in TEXT.splitlines()
    if line.startswith("#")
}
# The search-strategy interface is documented with the samplers issue.
INTERFACES = (
    interfaces.Sampler,
    interfaces.Scheduler,
    interfaces.WeightLoader,
    interfaces.Logger,
    interfaces.Corpus,
    interfaces.Quantizer,
    interfaces.Architecture,
    interfaces.PromptStyle,
    interfaces.Adapter,
)


def _hook_signatures() -> dict[str, str]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    names = [n for n in dir(hookspecs) if n.startswith("register_")]
    return {
        name: f"{name}({', '.join(getattr(pm.hook, name).spec.argnames)})"
        for name in names
    }


def _interface_members() -> list[str]:
    """``Class.method(args)`` for every public method and ``Class.attr`` for
    every public class attribute the interfaces define (besides ``kind``)."""
    members = []
    for cls in INTERFACES:
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr == "kind":
                continue
            func = value.__func__ if isinstance(value, classmethod) else value
            if not callable(func):
                members.append(f"{cls.__name__}.{attr}")
                continue
            args = ", ".join(
                p.name
                if p.default is inspect.Parameter.empty
                else f"{p.name}={p.default!r}"
                for p in inspect.signature(func).parameters.values()
                if p.name not in ("self", "cls")
            )
            members.append(f"{cls.__name__}.{attr}({args})")
    return members


@pytest.mark.parametrize(("hook", "signature"), sorted(_hook_signatures().items()))
def test_plugin_hooks_are_documented(hook, signature):
    assert signature in HEADINGS, f"docs/plugins.md needs a '### {signature}' section"


def test_documented_hooks_exist():
    documented = {h for h in HEADINGS if re.fullmatch(r"register_\w+\(.*\)", h)}
    assert documented == set(_hook_signatures().values())


@pytest.mark.parametrize("member", _interface_members())
def test_interface_members_are_documented(member):
    assert member in HEADINGS, f"docs/plugins.md needs a '#### {member}' section"


def test_the_sampler_interface_is_fully_covered():
    members = set(_interface_members())
    assert {
        "Sampler.start(batch_size)",
        "Sampler.process(logits)",
        "Sampler.sample(logits, generator=None)",
        "Sampler.deterministic",
    } <= members


def test_search_strategies_section_is_reserved():
    assert "Search strategies (beam search)" in HEADINGS


@pytest.mark.parametrize(
    "variable",
    sorted(set(re.findall(r"GPTKIT_[A-Z_]+_PLUGINS", inspect.getsource(registry)))),
)
def test_environment_variables_are_documented(variable):
    assert f"**`{variable}" in TEXT, f"document {variable} in docs/plugins.md"


@pytest.mark.parametrize("name", gptkit.testing.__all__)
def test_testing_fixtures_and_checks_are_documented(name):
    assert f"`{name}" in TEXT


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", TEXT, flags=re.M | re.S)


def test_python_examples_are_valid_python():
    blocks = _blocks("python")
    assert len(blocks) >= 8
    for block in blocks:
        ast.parse(block)


def test_toml_examples_are_valid_toml():
    tomllib = pytest.importorskip("tomllib")
    [block] = _blocks("toml")
    assert tomllib.loads(block)["project"]["entry-points"]["gptkit"] == {
        "example": "gptkit_example"
    }


def test_entry_point_example_matches_the_example_package():
    tomllib = pytest.importorskip("tomllib")
    path = REPO / "examples" / "gptkit-example-plugin" / "pyproject.toml"
    project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    assert project["name"] == "gptkit-example-plugin"
    assert project["entry-points"]["gptkit"] == {"example": "gptkit_example"}
