"""``gptkit.load`` and :class:`LanguageModel`: a GPT with its tokenizer, ready to
generate, stream and evaluate — what ``gptkit generate`` and ``gptkit eval`` run,
for Python users."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from gptkit.core.settings import EvalSettings, GenerateSettings, LoadSettings
from gptkit.errors import SettingError

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.model import GPTModel
    from gptkit.core.text import TextResult


def load(weights: str | None = None, /, **settings: Any) -> LanguageModel:
    """Load a model: any weight spec (``"hf:gpt2"``, ``"runs/NAME"``,
    ``"book:model.pth"``, a checkpoint directory), or a random init of
    ``preset`` (seeded by ``seed``) when no weights are given.

    Keywords are :class:`~gptkit.core.settings.LoadSettings` (``device``,
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


class LanguageModel:
    """A GPT with GPT-2's tokenizer: text in, text out.

    ``model`` is the :class:`~gptkit.core.model.GPTModel` (in eval mode);
    ``config``, ``device`` and ``dtype`` describe it.
    """

    def __init__(self, model: GPTModel, *, spec: str, settings: LoadSettings) -> None:
        self.model = model.eval()
        self.spec = spec
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: LoadSettings) -> LanguageModel:
        """Load what ``settings`` name (see :func:`load`)."""
        import torch

        from gptkit.core.config import get_preset
        from gptkit.core.device import resolve_device, resolve_dtype
        from gptkit.core.loading import model_from_spec
        from gptkit.core.weights import build_model

        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype)
        if settings.weights is not None:
            model, _ = model_from_spec(
                settings.weights,
                device=device,
                dtype=dtype,
                hints=settings.weight_hints(),
                quantize=settings.quantize,
            )
            spec = settings.weights
        else:
            from gptkit.runs.preflight import check_memory, model_estimate

            cfg = get_preset(settings.preset_name()).replace(
                **settings.model_overrides()
            )
            check_memory(
                model_estimate(cfg, dtype=settings.dtype),
                device,
                max_memory=settings.max_memory,
            )
            seed = 123 if settings.seed is None else settings.seed
            torch.manual_seed(seed)
            model = build_model(cfg, device=device, dtype=dtype)
            if settings.quantize:
                from gptkit.core.quantize import quantize_model

                quantize_model(model, settings.quantize)
            spec = f"random init ({settings.preset_name()}, seed {seed})"
        from gptkit.core.quantize import accelerate_bf16

        return cls(accelerate_bf16(model), spec=spec, settings=settings)

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

    @staticmethod
    def encode(text: str) -> list[int]:
        """GPT-2 token ids of ``text`` (``<|endoftext|>`` allowed)."""
        from gptkit.core.tokenizer import encode

        return encode(text)

    @staticmethod
    def decode(ids: Sequence[int]) -> str:
        from gptkit.core.tokenizer import decode

        return decode(list(ids))

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

        Keywords are :class:`~gptkit.core.settings.GenerateSettings`
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
        from gptkit.core.interfaces import SearchStrategy
        from gptkit.core.text import TextGeneration
        from gptkit.system.progress import progress_bar

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
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
        from gptkit.runs.preflight import check_memory, generation_estimate

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
        from gptkit.core.text import TextGeneration

        if not isinstance(prompt, str):
            raise TypeError("stream takes one prompt (a string)")
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
            **choice.engine,
        }
        return choice.sampler, kwargs

    # -- evaluation --------------------------------------------------------------

    def loss(self, text: str) -> float:
        """Mean next-token cross-entropy of ``text`` (nats per token), over
        consecutive windows of the context length; ``exp`` of it is the
        perplexity."""
        import torch
        import torch.nn.functional as F

        ids = self.encode(text)
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
        :class:`~gptkit.core.settings.EvalSettings`: ``context_length`` (at most
        the model's), ``batch_size``, ``stride``, ``train_ratio``, ``eval_iter``
        (the first N batches only), ``seed``. ``progress``: a progress bar of
        the batches on stderr (default: when stderr is a terminal).
        """
        from gptkit.core.data import eval_batches, load_text, make_loaders
        from gptkit.core.loss import loader_loss, perplexity
        from gptkit.runs.preflight import check_memory, evaluation_estimate
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
            load_text(chosen.corpus_names()),
            context_length=context,
            batch_size=chosen.batch_size,
            stride=chosen.stride,
            train_ratio=chosen.split_ratio(),
            seed=chosen.seed,
        )
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
