from dataclasses import dataclass, field

import pytest

from gptkit.core.options import build_options, parse_pairs
from gptkit.errors import OptionError


@dataclass(frozen=True)
class Opts:
    temperature: float = field(default=1.0, metadata={"help": "t", "ge": 0.0})
    top_k: int | None = field(default=None, metadata={"help": "k", "ge": 1})
    flag: bool = False
    paths: tuple[str, ...] = ()
    mode: str = field(default="a", metadata={"choices": ("a", "b")})


def test_strings_are_converted_to_field_types():
    opts = build_options(
        Opts,
        {
            "temperature": "0.5",
            "top_k": "3",
            "flag": "yes",
            "paths": "x,y",
            "mode": "b",
        },
        "sampler t",
    )
    assert opts == Opts(0.5, 3, True, ("x", "y"), "b")
    assert build_options(Opts, {"top_k": "none"}, "sampler t").top_k is None


def test_unknown_key_lists_valid_options():
    with pytest.raises(OptionError, match=r"unknown option colour.*temperature, top_k"):
        build_options(Opts, {"colour": "red"}, "sampler t")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": "-1"}, "temperature of sampler t must be >= 0.0"),
        ({"top_k": "0"}, "top_k of sampler t must be >= 1"),
        ({"top_k": "2.5"}, "not a valid int"),
        ({"flag": "maybe"}, "not a valid bool"),
        ({"mode": "c"}, "must be one of a, b"),
    ],
)
def test_bad_values_are_clear_errors(values, message):
    with pytest.raises(OptionError, match=message):
        build_options(Opts, values, "sampler t")


def test_parse_pairs():
    assert parse_pairs(["a=1", "top-k = 5"]) == {"a": "1", "top_k": "5"}
    with pytest.raises(OptionError, match="key=value"):
        parse_pairs(["novalue"])
