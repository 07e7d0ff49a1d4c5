"""Base classes of the pluggable components (torch-free at import time).

Every component class has a unique ``name`` (lowercase, dashes), a one-line
``summary`` and a nested frozen dataclass ``Options``. Construct a component with
keyword options (``TopK(temperature=0.8)``) or a mapping of strings from the CLI
(``TopK.from_options({"temperature": "0.8"})``); both are validated.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gptkit.core.options import build_options

if TYPE_CHECKING:
    import torch


NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")


def import_target(target: str) -> Any:
    """Import ``"package.module:Attribute"``."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{target!r} is not of the form 'module:Class'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def class_constants(target: str, names: tuple[str, ...]) -> dict[str, str]:
    """String constants assigned in the body of the class ``"module:Class"``
    (``name = "top-k"``), read from the module's source without importing it:
    how the registry lists a component whose module imports torch. Names that
    are not plain string literals there (computed, inherited) are left out."""
    module, _, qualname = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return {}
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return {}
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    body: list[ast.stmt] = tree.body
    for part in qualname.split("."):
        found = [n for n in body if isinstance(n, ast.ClassDef) and n.name == part]
        if not found:
            return {}
        body = found[0].body
    out: dict[str, str] = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            key, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            key, value = node.target, node.value
        else:
            continue
        if (
            isinstance(key, ast.Name)
            and key.id in names
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            out[key.id] = value.value
    return out


@dataclass(frozen=True)
class Component:
    """A component declared with its name and summary (for plugins that cannot
    keep them as string literals in the class body). Prefer returning
    ``"module:Class"``: the registry then reads both from the class itself.

    ``target`` is ``"module:Class"`` (imported only when the component is used) or
    the class itself. The registry checks, when it imports the class, that the
    class's ``name`` is this one.
    """

    name: str
    target: str | type
    summary: str = ""

    def load(self) -> type:
        return (
            import_target(self.target) if isinstance(self.target, str) else self.target
        )


class ComponentBase:
    """Common shape of every component: name, summary, validated options."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Options:
        """No options."""

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is None or isinstance(options, Mapping):
            values = {**(options or {}), **kwargs}
            options = build_options(type(self).Options, values, self.describe())
        elif kwargs:
            raise TypeError("pass either an Options instance or keyword options")
        self.options = options

    @classmethod
    def describe(cls) -> str:
        return f"{cls.kind} {cls.name}"


# -- samplers -----------------------------------------------------------------


class Sampler(ComponentBase):
    """A per-token sampler: logits of the last position -> next token ids.

    The generation engine owns the decode loop (prompt prefill, key/value cache,
    stop conditions, batching, streaming) and calls :meth:`sample` once per step.
    Override :meth:`process` to transform logits (temperature, top-k, ...) and keep
    the default :meth:`sample`, which draws from ``softmax(process(logits))``
    (or takes the argmax when :attr:`deterministic`).
    """

    kind = "sampler"
    #: True when :meth:`sample` takes the argmax (no random draw).
    deterministic: ClassVar[bool] = False
    #: Text comes token by token (streaming works).
    streams: ClassVar[bool] = True

    def start(self, batch_size: int) -> None:
        """Called before each generation: reset any per-row state here."""

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """Processed logits (B, V); ``-inf`` removes a token. Default: unchanged."""
        return logits

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Next ids (B,) from last-position logits (B, V) (float32)."""
        import torch

        from gptkit.system.sampling import multinomial

        processed = self.process(logits)
        if self.deterministic:
            return processed.argmax(dim=-1)
        probs = torch.softmax(processed, dim=-1)
        try:  # torch.multinomial's draw, faster on the CPU
            return multinomial(probs, generator).squeeze(-1)
        except RuntimeError:
            if bool(torch.isfinite(probs).all()):
                raise
            from gptkit.errors import GptkitError

            raise GptkitError(
                f"sampler {self.name}: the model's next-token probabilities are"
                " not finite (NaN or inf logits: damaged weights, or an fp16"
                " overflow); check the weights or use another dtype"
            ) from None


class SearchStrategy(ComponentBase):
    """A whole-sequence decoding strategy (beam search): implements ``generate``.

    It returns finished sequences, so its text cannot be streamed token by token.
    """

    kind = "sampler"
    #: Whole sequences at the end: no token-by-token streaming.
    streams: ClassVar[bool] = False

    def generate(self, model: Any, request: Any) -> Any:
        raise NotImplementedError

    def sequences(self) -> int:
        """Sequences decoded together per prompt (beam search: its beams), as a
        server counts them against its batch."""
        return 1


# -- quantizers ---------------------------------------------------------------


class Quantizer(ComponentBase):
    """Weight-only quantization of a model's linear layers (``--quantize NAME``).

    :func:`gptkit.core.quantize.quantize_model` hands every ``torch.nn.Linear``
    of the model (the output head included) to :meth:`quantize_linear` and puts
    the module it returns in its place; activations keep their dtype.
    """

    kind = "quantizer"

    def quantize_linear(self, linear: torch.nn.Module, name: str) -> torch.nn.Module:
        """A module computing ``linear``'s function from quantized weights.

        ``name`` is the layer's name in the model (``out_head``,
        ``trf_blocks.0.att.W_query``, ...), for quantizers that treat layers
        differently.

        Its state dict (persistent buffers and parameters) is what a quantized
        checkpoint stores. It must also work on the meta device: a saved
        quantized model is loaded by quantizing a model of meta tensors (shapes
        only) and assigning the stored tensors to the result.
        """
        raise NotImplementedError

    def fused_step(self, model: torch.nn.Module) -> Any:
        """Optional, called once every layer is replaced: a callable taking the
        model's forward arguments that runs a decoding step faster, returning
        its logits or None where it does not apply (the forward then runs)."""
        return None


# -- architectures ------------------------------------------------------------


class Architecture(ComponentBase):
    """A model family (``--arch NAME``): config dataclass, presets, the model,
    its Hugging Face mapping both ways and its tokenizer (docs/plugins.md).

    The model is an ``nn.Module`` the core uses only through ``model.cfg``,
    ``model(ids, cache=, position_ids=, attention_mask=, logits_at=)`` (as
    ``GPTModel.forward``), ``model.blocks()`` and its ``nn.Linear`` layers.
    """

    kind = "architecture"
    #: ``model_type`` values of the Hugging Face ``config.json`` files it reads.
    hf_model_types: ClassVar[tuple[str, ...]] = ()
    #: The preset of ``--arch NAME`` without ``--preset``.
    default_preset: ClassVar[str] = ""

    def config_class(self) -> type:
        """The config dataclass (a ``ModelConfig`` whose ``arch`` is ``name``)."""
        raise NotImplementedError

    def presets(self) -> dict[str, Any]:
        """Named configs; names are unique across every architecture."""
        return {}

    def build(self, cfg: Any) -> torch.nn.Module:
        """A freshly initialised model of ``cfg`` (the default device)."""
        raise NotImplementedError

    def config_from_hf(self, data: dict[str, Any], where: str) -> Any:
        """The config of a parsed ``config.json``; a GptkitError naming ``where``
        for what the family cannot run."""
        raise NotImplementedError

    def config_to_hf(self, cfg: Any, dtype: str = "float32") -> dict[str, Any]:
        """A Hugging Face ``config.json`` (a dict) for ``cfg``."""
        raise NotImplementedError

    def state_from_hf(self, cfg: Any, source: Any, where: str) -> dict[str, Any]:
        """gptkit's state dict from a ``TensorSource``, checked against ``cfg``."""
        raise NotImplementedError

    def state_to_hf(self, cfg: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Hugging Face tensors of a state dict (which it may empty)."""
        raise NotImplementedError

    def tokenizer(self, directory: Path | None) -> Any:
        """The tokenizer of a checkpoint directory, or the default (None)."""
        raise NotImplementedError


# -- prompt styles ------------------------------------------------------------


class PromptStyle(ComponentBase):
    """How instruction records and chat messages become the text a model reads
    (``--prompt-style NAME``; see docs/plugins.md)."""

    kind = "prompt style"
    #: Text that ends a reply when the model writes it (the next turn's header).
    stop: ClassVar[tuple[str, ...]] = ()

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        """The prompt of a book-format record (the book's ``format_input``)."""
        raise NotImplementedError

    def response_text(self, output: str) -> str:
        """What follows :meth:`instruction_prompt` in a training text."""
        raise NotImplementedError

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The text the model continues to write the next assistant reply."""
        raise NotImplementedError

    def clean_response(self, text: str) -> str:
        """A generated reply as it is stored and returned."""
        return text.strip()


# -- adapters -----------------------------------------------------------------


class Adapter(ComponentBase):
    """Parameter-efficient finetuning of linear layers (``--lora``; LoRA, ...):
    the model frozen, the targeted layers replaced (see docs/plugins.md)."""

    kind = "adapter"

    def adapt_linear(self, linear: torch.nn.Module, name: str) -> torch.nn.Module:
        """``linear`` (frozen, same ``weight``/``bias``) plus a trainable update
        whose ``delta_weight()`` (out, in) merging adds to the weight."""
        raise NotImplementedError

    def trainable_parameters(self, in_features: int, out_features: int) -> int:
        """Parameters :meth:`adapt_linear` adds to a layer of that shape."""
        raise NotImplementedError

    def targets(self) -> tuple[str, ...]:
        """Layer names (or name endings) to adapt; empty: every linear layer."""
        return ()


# -- schedulers ---------------------------------------------------------------


class Scheduler(ComponentBase):
    """A learning-rate schedule: a pure function of the optimizer step."""

    kind = "scheduler"

    def lr_at(self, step: int, total_steps: int, base_lr: float) -> float:
        """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``;
        ``base_lr`` is ``--lr``."""
        raise NotImplementedError


# -- weight loaders -----------------------------------------------------------


@dataclass
class LoadedWeights:
    """What a weight loader returns: the model's config and its state dict
    (in gptkit's parameter names), plus anything else it found."""

    #: The model config (a :class:`gptkit.core.config.ModelConfig` of any family).
    config: Any
    state_dict: dict[str, torch.Tensor]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


class WeightLoader(ComponentBase):
    """Reads weights named by a spec ``<name>:<location>`` (``hf:gpt2``).

    Tensors are returned on the CPU in the file's dtype unless the loader says
    otherwise; the caller moves them to ``--device`` and casts to ``--dtype``.
    """

    kind = "weight loader"

    @classmethod
    def accepts(cls, location: str) -> bool:
        """Whether a bare path (no prefix) is in this loader's format."""
        return False

    def load(self, location: str) -> LoadedWeights:
        raise NotImplementedError


# -- loggers ------------------------------------------------------------------


@dataclass
class RunInfo:
    """What a logger learns when training starts."""

    run_dir: Path | None
    config: dict[str, Any]
    total_steps: int
    steps_per_epoch: int
    epochs: int
    num_parameters: int
    train_tokens: int
    val_tokens: int
    start_step: int = 0


class Logger(ComponentBase):
    """Receives training events. Rows are plain JSON-ready dicts:

    - step rows: ``step, epoch, tokens_seen, lr, loss`` (one per optimizer step);
    - eval rows: ``step, epoch, tokens_seen, train_loss, val_loss``;
    - sample rows: ``epoch, step, tokens_seen, prompt, text``.
    """

    kind = "logger"

    def start(self, run: RunInfo) -> None:
        """Training begins (or resumes at ``run.start_step``)."""

    def log_step(self, row: dict[str, Any]) -> None:
        """After every optimizer step."""

    def log_eval(self, row: dict[str, Any]) -> None:
        """After every evaluation (every ``--eval-freq`` steps)."""

    def log_sample(self, row: dict[str, Any]) -> None:
        """After each epoch's sample."""

    def message(self, text: str) -> None:
        """A line of information for the user (checkpoints, warnings)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Training ended (also after an interruption); flush and close."""


# -- corpora ------------------------------------------------------------------


class Corpus(ComponentBase):
    """A text corpus: yields documents (strings). Documents are joined with
    ``<|endoftext|>`` before the train/validation split."""

    kind = "corpus"
    #: The prompt of the per-epoch sample when ``--start-context`` is not given.
    sample_prompt: ClassVar[str] = "Every effort moves you"

    def documents(self) -> Iterator[str]:
        raise NotImplementedError
