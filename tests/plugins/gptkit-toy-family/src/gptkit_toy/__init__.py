"""The hook module: no torch here (gptkit lists plugins without importing it)."""

from gptkit import hookimpl


@hookimpl
def register_architectures():
    return ["gptkit_toy.family:Toy"]
