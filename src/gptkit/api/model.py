"""``gptkit.load`` and :class:`LanguageModel`: a GPT with its tokenizer, ready to
generate, stream and evaluate — what ``gptkit generate`` and ``gptkit eval`` run,
for Python users."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from gptkit.api.settings import EvalSettings, GenerateSettings, LoadSettings
from gptkit.errors import GptkitError, SettingError

if TYPE_CHECKING:
    import torch

    from gptkit.api.text import TextResult
    from gptkit.core.config import GPTConfig
    from gptkit.core.interfaces import PromptStyle
    from gptkit.core.model import GPTModel
    from gptkit.core.tokenizer import Tokenizer
    from gptkit.runs.preflight import MemoryEstimate


def load(weights: str | None = None, /, **settings: Any) -> LanguageModel:
    """Load a model: any weight spec (``"hf:gpt2"``, ``"runs/NAME"``,
    ``"book:model.pth"``, a checkpoint directory), or a random init of
    ``preset`` (seeded by ``seed``) when no weights are given.

    Keywords are :class:`~gptkit.api.settings.LoadSettings` (``device``,
    ``dtype``, ``n_heads`` for files that do not record it, ...).

    >>> lm = gptkit.load("hf:gpt2", device="cpu")            # doctest: +SKIP
    >>> lm.generate("Every effort moves you", max_new_tokens=10)  # doctest: +SKIP
    """
    if weights is not None:
        settings["weights"] = weights
    chosen = LoadSettings.create(settings)
    if chosen.weights is None and chosen.preset is None:
        raise SettingError("give {weights} to load, or a {preset} for a random init")
    return LanguageModel.from_settings(chosen)


def load_for_evaluation(settings: EvalSettings) -> LanguageModel:
    """The model ``gptkit eval`` evaluates: ``weights``, or a random init of
    ``preset`` seeded by ``seed`` at ``context_length``. A random init whose
    evaluation (weights, activations, logits of a batch) cannot fit is refused
    before any of it is allocated."""
    from gptkit.runs.preflight import evaluation_estimate

    load = {k: getattr(settings, k) for k in LoadSettings.names()}
    if settings.weights is None:
        load["preset"] = settings.preset_name()
    else:
        load["context_length"] = None  # evaluation windows, not the model's

    def workload(cfg: GPTConfig) -> MemoryEstimate:
        return evaluation_estimate(
            cfg, batch_size=settings.batch_size, dtype=settings.dtype, weights=True
        )

    return LanguageModel.from_settings(LoadSettings.create(load), workload=workload)


class LanguageModel:
    """A GPT with GPT-2's tokenizer: text in, text out.

    ``model`` is the :class:`~gptkit.core.model.GPTModel` (in eval mode);
    ``config``, ``device`` and ``dtype`` describe it.
    """

    def __init__(
        self,
        model: GPTModel,
        *,
        spec: str,
        settings: LoadSettings,
        tokenizer: Tokenizer | None = None,
        prompt_style: dict[str, Any] | None = None,
    ) -> None:
        from gptkit.core.tokenizer import gpt2_tokenizer

        self.model = model.eval()
        self.spec = spec
        self.settings = settings
        #: The model's tokenizer (the checkpoint's own; GPT-2's for GPT-2).
        self.tokenizer = tokenizer or gpt2_tokenizer()
        #: The prompt style a finetuned model recorded (``{"name", "options"}``),
        #: or None.
        self.prompt_style_record = prompt_style

    @classmethod
    def from_settings(
        cls,
        settings: LoadSettings,
        *,
        workload: Callable[[GPTConfig], MemoryEstimate] | None = None,
    ) -> LanguageModel:
        """Load what ``settings`` name (see :func:`load`).

        ``workload``: the memory of what the model will do, weights included
        (an evaluation, a generation); a random init is refused before it is
        built when that does not fit, not only when its weights do not."""
        import torch

        from gptkit.core.config import get_preset
        from gptkit.core.device import resolve_device, resolve_dtype
        from gptkit.core.weights import build_model
        from gptkit.formats.models import model_from_spec
        from gptkit.formats.tokenizers import check_vocabulary, tokenizer_for

        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype)
        style = None
        if settings.weights is not None:
            from gptkit.runs.finetune import recorded_style

            model, loaded = model_from_spec(
                settings.weights,
                device=device,
                dtype=dtype,
                hints=settings.weight_hints(),
                quantize=settings.quantize,
            )
            spec = settings.weights
            tokenizer = tokenizer_for(model.cfg, loaded.extra, settings.tokenizer)
            check_vocabulary(model.cfg, tokenizer, spec)
            style = recorded_style(loaded.extra)
        else:
            from gptkit.runs.preflight import check_memory, model_estimate

            cfg = get_preset(settings.preset_name()).replace(
                **settings.model_overrides()
            )
            tokenizer = tokenizer_for(cfg, None, settings.tokenizer)
            if tokenizer.n_vocab != cfg.vocab_size:  # a new model takes its ids
                cfg = cfg.replace(vocab_size=tokenizer.n_vocab)
            estimate = (
                workload(cfg)
                if workload is not None
                else model_estimate(cfg, dtype=settings.dtype)
            )
            check_memory(estimate, device, max_memory=settings.max_memory)
            seed = 123 if settings.seed is None else settings.seed
            torch.manual_seed(seed)
            model = build_model(cfg, device=device, dtype=dtype)
            if settings.quantize:
                from gptkit.core.quantize import quantize_model

                quantize_model(model, settings.quantize)
            spec = f"random init ({settings.preset_name()}, seed {seed})"
        from gptkit.formats.models import accelerate_bf16

        return cls(
            accelerate_bf16(model),
            spec=spec,
            settings=settings,
            tokenizer=tokenizer,
            prompt_style=style,
        )

    # -- what it is ------------------------------------------------------------

    @property
    def config(self) -> GPTConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def num_parameters(self) -> int:
        """Parameters (a tied head counted once)."""
        return self.config.num_parameters()

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"LanguageModel({self.spec!r}: {self.num_parameters() / 1e6:.1f}M"
            f" parameters, {cfg.n_layers} layers, {cfg.emb_dim} wide, context"
            f" {cfg.context_length}, {str(self.dtype).removeprefix('torch.')} on"
            f" {self.device})"
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` by the model's tokenizer (special tokens such
        as ``<|endoftext|>`` allowed)."""
        from gptkit.api import arguments

        return self.tokenizer.encode(arguments.text(text, "text"))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (each in the tokenizer's vocabulary)."""
        from gptkit.api import arguments

        return self.tokenizer.decode(arguments.token_ids(ids, self.tokenizer.n_vocab))

    # -- generation --------------------------------------------------------------

    @overload
    def generate(self, prompt: str, **settings: Any) -> str: ...

    @overload
    def generate(self, prompt: Sequence[str], **settings: Any) -> list[str]: ...

    def generate(
        self,
        prompt: str | Sequence[str],
        *,
        progress: bool | None = None,
        **settings: Any,
    ) -> str | list[str]:
        """The continuation of ``prompt`` (a string), or of each prompt of a list
        (generated as one batch).

        Keywords are :class:`~gptkit.api.settings.GenerateSettings`
        (``max_new_tokens``, ``sampler``, ``temperature``, ``top_k``, ``top_p``,
        ``num_beams``, ``stop``, ``seed``, ...); any other keyword is an option
        of the sampler (``length_penalty=0.6`` for beam search). Beam search with
        ``num_return_sequences`` > 1 returns that many texts per prompt.
        ``progress``: see :meth:`complete`. A request that cannot fit in
        memory (beams x prompts x length) is refused before anything is
        allocated.
        """
        results = self.complete(prompt, progress=progress, **settings)
        texts = [r.completion for r in results]
        return texts[0] if isinstance(prompt, str) and len(texts) == 1 else texts

    def complete(
        self,
        prompt: str | Sequence[str],
        *,
        progress: bool | None = None,
        **settings: Any,
    ) -> list[TextResult]:
        """Like :meth:`generate`, with the details: prompt and new token ids,
        finish reason (``length``, ``eos``, ``stop``) and beam scores.

        ``progress``: a progress bar of the decoding steps on stderr (default:
        when stderr is a terminal, or ``GPTKIT_PROGRESS=1``)."""
        from gptkit.api import arguments
        from gptkit.api.text import TextGeneration
        from gptkit.core.interfaces import SearchStrategy
        from gptkit.system.progress import progress_bar

        prompts = arguments.prompts(prompt)
        sampler, kwargs = self._sampling(settings)
        self._check_generation_memory(prompts, sampler, kwargs)
        steps = kwargs["max_new_tokens"]
        if isinstance(sampler, SearchStrategy):  # one search per prompt
            steps *= len(prompts)
        with progress_bar(
            steps, desc="generating", unit="step", enabled=progress
        ) as bar:
            generation = TextGeneration(
                self.model, prompts, sampler, on_step=bar.update, **kwargs
            )
            for _ in generation:
                pass
        return generation.results

    def _check_generation_memory(
        self, prompts: list[str], sampler: Any, kwargs: dict[str, Any]
    ) -> None:
        """Refuse, before anything is allocated, a generation whose key/value
        cache, beams or logits cannot fit (see :mod:`gptkit.runs.preflight`)."""
        from gptkit.core.interfaces import SearchStrategy
        from gptkit.runs.preflight import (
            check_memory,
            generation_estimate,
        )

        beams = 1
        if isinstance(sampler, SearchStrategy):
            beams = int(getattr(sampler.options, "num_beams", 1) or 1)
        # Tokens are at least a byte each: an upper bound, without building
        # the tokenizer (the refusal stays fast).
        longest = max((len(p.encode("utf-8")) + 1 for p in prompts), default=1)
        estimate = generation_estimate(
            self.config,
            prompts=len(prompts),
            prompt_tokens=longest,
            max_new_tokens=kwargs["max_new_tokens"],
            num_beams=beams,
            dtype=self.settings.dtype,
            weights=False,  # loaded already
        )
        check_memory(estimate, self.device, max_memory=self.settings.max_memory)

    def stream(self, prompt: str, **settings: Any) -> Iterator[str]:
        """The continuation of ``prompt`` piece by piece, as it is generated
        (the pieces add up to :meth:`generate`'s text). Settings as
        :meth:`generate`; the sampler must produce tokens one by one (not beam
        search). Stop iterating to stop generating."""
        from gptkit.api import arguments
        from gptkit.api.text import TextGeneration

        arguments.text(prompt, "prompt")  # one prompt
        sampler, kwargs = self._sampling(settings)
        if not getattr(sampler, "streams", False):
            raise SettingError(
                f"{{sampler}} {sampler.name} returns whole sequences and cannot"
                " stream; use a per-token sampler"
            )
        self._check_generation_memory([prompt], sampler, kwargs)
        for _, piece in TextGeneration(self.model, [prompt], sampler, **kwargs):
            yield piece

    def _sampling(self, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(sampler, the engine's keyword arguments) from generation keywords."""
        from gptkit.api.sampling import resolve_sampler

        known = set(GenerateSettings.names())
        given = {k: v for k, v in settings.items() if k in known}
        extra = {k: v for k, v in settings.items() if k not in known}
        if extra:
            given["options"] = {**extra, **dict(given.get("options") or {})}
        chosen = GenerateSettings.create(given)
        choice = resolve_sampler(chosen)
        kwargs = {
            "max_new_tokens": chosen.max_new_tokens,
            "stop_strings": chosen.stop,
            "seed": chosen.seed,
            "truncate": chosen.truncate,
            "compiled": self.settings.compile,
            "tokenizer": self.tokenizer,
            **choice.engine,
        }
        return choice.sampler, kwargs

    # -- instructions and chat ------------------------------------------------------

    @property
    def prompt_style(self) -> PromptStyle:
        """The prompt style the model was finetuned with (an error for a model
        that has none)."""
        from gptkit.runs.finetune import style_from_record

        if self.prompt_style_record is None:
            raise GptkitError(
                f"{self.spec} has no prompt style (it was not finetuned with"
                " gptkit finetune); chat needs an instruction-finetuned model"
            )
        return style_from_record(self.prompt_style_record)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt of the next reply to ``messages`` in the model's style."""
        return self.prompt_style.chat_prompt([dict(m) for m in messages])

    def chat_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Generation keywords for a reply: the style's stop strings added,
        greedy (the book's) unless a sampler is asked for, 256 new tokens unless
        given."""
        stop = tuple(settings.get("stop") or ()) + self.prompt_style.stop
        return {"max_new_tokens": 256, **settings, "stop": stop}

    def chat(self, messages: Sequence[dict[str, str]], **settings: Any) -> str:
        """The model's reply to a conversation (``[{"role": "user", "content":
        ...}, ...]``), in its prompt style; keywords as :meth:`generate`.

        >>> lm = gptkit.load("runs/sft")  # doctest: +SKIP
        >>> lm.chat([{"role": "user", "content": "Name a color."}])  # doctest: +SKIP
        """
        prompt = self.chat_prompt(messages)
        text = self.generate(prompt, **self.chat_settings(settings))
        return self.clean_reply(str(text))

    def clean_reply(self, text: str) -> str:
        """A generated reply without the style's stop strings and headers."""
        style = self.prompt_style
        for stop in style.stop:
            text = text.split(stop)[0]
        return style.clean_response(text)

    def stream_chat(
        self, messages: Sequence[dict[str, str]], **settings: Any
    ) -> Iterator[str]:
        """The reply to ``messages`` piece by piece (the pieces add up to the
        raw reply; :meth:`clean_reply` tidies it)."""
        prompt = self.chat_prompt(messages)
        yield from self.stream(prompt, **self.chat_settings(settings))

    # -- evaluation --------------------------------------------------------------

    def evaluate_instructions(
        self,
        data: str,
        *,
        batch_size: int = 8,
        train_ratio: float = 0.85,
        test_ratio: float = 0.1,
    ) -> dict[str, Any]:
        """The loss and perplexity of the responses of ``data``'s test split
        (the book's split), prompts masked out of the loss, in the model's
        prompt style (``alpaca`` for a model without one): the mean
        cross-entropy over every response token and its ``<|endoftext|>``."""
        import math

        import torch
        import torch.nn.functional as F

        from gptkit.formats.instruction_batches import (
            IGNORE_INDEX,
            InstructionCollator,
            InstructionDataset,
            pad_id,
        )
        from gptkit.formats.instructions import read_instruction_data, split_records
        from gptkit.runs.finetune import resolve_style, style_from_record

        style = (
            style_from_record(self.prompt_style_record)
            if self.prompt_style_record is not None
            else resolve_style(None, None, self.tokenizer)
        )
        records = read_instruction_data(data).records
        test = split_records(records, train_ratio, test_ratio).test
        if not test:
            raise SettingError(f"{data}: the test split is empty; use more records")
        context = self.config.context_length
        dataset = InstructionDataset(test, style, context, self.tokenizer)
        collate = InstructionCollator(
            pad_token_id=pad_id(self.tokenizer),
            allowed_max_length=context,
            mask_prompt=True,
        )
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                inputs, targets = collate(
                    [
                        dataset[i]
                        for i in range(start, min(len(dataset), start + batch_size))
                    ]
                )
                logits = self.model(inputs.to(self.device)).float()  # (B, T, V)
                targets = targets.to(self.device)
                total += F.cross_entropy(
                    logits.flatten(0, 1), targets.flatten(), reduction="sum"
                ).item()
                count += int((targets != IGNORE_INDEX).sum())
        loss = total / count
        return {
            "weights": self.spec,
            "data": data,
            "prompt_style": style.name,
            "test_records": len(dataset),
            "skipped": dataset.skipped,
            "response_tokens": count,
            "test_loss": loss,
            "test_perplexity": math.exp(loss) if loss < 700 else float("inf"),
        }

    def loss(self, text: str) -> float:
        """Mean next-token cross-entropy of ``text`` (nats per token), over
        consecutive windows of the context length; ``exp`` of it is the
        perplexity."""
        import torch
        import torch.nn.functional as F

        from gptkit.api import arguments
        from gptkit.runs.preflight import check_ids_fit

        ids = self.encode(arguments.text(text, "text"))
        check_ids_fit(max(ids, default=0), self.config.vocab_size, "the text")
        if len(ids) < 2:
            raise SettingError("loss needs a text of at least two tokens")
        ctx = self.config.context_length
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(ids) - 1, ctx):
                chunk = torch.tensor(ids[start : start + ctx + 1], device=self.device)
                logits = self.model(chunk[None, :-1])  # (1, T, V)
                total += F.cross_entropy(
                    logits[0].float(), chunk[1:], reduction="sum"
                ).item()
                count += len(chunk) - 1
        return total / count

    def evaluate(
        self,
        corpus: str | Sequence[str] | None = None,
        *,
        progress: bool | None = None,
        **settings: Any,
    ) -> dict[str, Any]:
        """Training and validation loss and perplexity on a corpus, as
        ``gptkit eval`` computes them (the book's chapter 5 split and windows).

        Keywords are the data settings of
        :class:`~gptkit.api.settings.EvalSettings`: ``context_length`` (at most
        the model's), ``batch_size``, ``stride``, ``train_ratio``, ``eval_iter``
        (the first N batches only), ``seed``. ``progress``: a progress bar of
        the batches on stderr (default: when stderr is a terminal).
        """
        from gptkit.core.data import eval_batches, make_loaders
        from gptkit.core.loss import loader_loss, perplexity
        from gptkit.formats.corpora import load_text
        from gptkit.runs.preflight import (
            check_data_fits,
            check_memory,
            evaluation_estimate,
        )
        from gptkit.system.progress import progress_bar

        if corpus is not None:
            settings["corpus"] = corpus
        allowed = {
            "corpus",
            "context_length",
            "batch_size",
            "stride",
            "train_ratio",
            "eval_iter",
            "seed",
        }
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise SettingError(
                f"unknown setting {{{unknown[0]}}} for evaluate; valid: "
                + ", ".join(sorted(allowed))
            )
        chosen = EvalSettings.create(settings)
        context = chosen.context_length or self.config.context_length
        if context > self.config.context_length:
            raise SettingError(
                f"{{context_length}} {context} exceeds the model's context length"
                f" {self.config.context_length}"
            )
        estimate = evaluation_estimate(
            self.config.replace(context_length=context),
            batch_size=chosen.batch_size,
            dtype=self.settings.dtype,
            weights=False,  # loaded already
        )
        check_memory(estimate, self.device, max_memory=self.settings.max_memory)
        data = make_loaders(
            load_text(chosen.corpus_names(), self.tokenizer),
            tokenizer=self.tokenizer,
            context_length=context,
            batch_size=chosen.batch_size,
            stride=chosen.stride,
            train_ratio=chosen.split_ratio(),
            seed=chosen.seed,
        )
        check_data_fits(data, self.config.vocab_size, "the corpus")
        n = chosen.eval_iter
        batches = eval_batches(data.train_eval_loader, n) + eval_batches(
            data.val_loader, n
        )
        with progress_bar(
            batches, desc="evaluating", unit="batch", enabled=progress
        ) as bar:
            train_loss = loader_loss(
                data.train_eval_loader, self.model, self.device, n, bar.update
            )
            val_loss = loader_loss(
                data.val_loader, self.model, self.device, n, bar.update
            )
        return {
            "weights": self.spec,
            "corpus": list(chosen.corpus_names()),
            "context_length": context,
            "train_tokens": data.train_tokens,
            "val_tokens": data.val_tokens,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_perplexity": perplexity(train_loss),
            "val_perplexity": perplexity(val_loss),
        }


def remember_style(lm: LanguageModel) -> None:
    """Keep ``lm``'s prompt style with its module (for code that is handed
    the module alone, such as the server's engine)."""
    lm.model.prompt_style_record = lm.prompt_style_record  # type: ignore[assignment]


def style_of(model: Any) -> PromptStyle | None:
    """The prompt style :func:`remember_style` kept with ``model``, if any."""
    from gptkit.runs.finetune import style_from_record

    record = getattr(model, "prompt_style_record", None)
    return None if record is None else style_from_record(record)
