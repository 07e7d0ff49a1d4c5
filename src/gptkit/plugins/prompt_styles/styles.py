"""The prompt styles of the book's chapter 7 and a tokenizer's chat template.

- ``alpaca``: the book's ``format_input`` (section 7.2), the Alpaca template
  (Taori et al., 2023): "Below is an instruction that describes a task. ..."
  then ``### Instruction:``, an optional ``### Input:`` and ``### Response:``.
- ``phi3``: the book's exercise 7.1, Phi-3's ``<|user|>`` / ``<|assistant|>``
  markers written as plain text (GPT-2's tokenizer has no such tokens).
- ``chat-template``: a Hugging Face tokenizer's Jinja ``chat_template``
  (rendered with ``add_generation_prompt``), for checkpoints that carry one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gptkit.core.interfaces import PromptStyle
from gptkit.errors import GptkitError

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def _check_messages(messages: list[dict[str, str]]) -> None:
    if not messages:
        raise GptkitError("a conversation needs at least one message")
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise GptkitError(
                f"message {i}: role must be system, user or assistant, not {role!r}"
            )
        if not isinstance(message.get("content"), str):
            raise GptkitError(f"message {i}: content must be a string")


class Alpaca(PromptStyle):
    """The book's instruction template. A conversation is a sequence of
    ``### Instruction:`` / ``### Response:`` sections after the preamble (a
    system message replaces the preamble), ending with an open
    ``### Response:`` header."""

    name = "alpaca"
    summary = "The book's chapter-7 template: '### Instruction:' ... '### Response:'."
    stop = ("\n\n### Instruction:",)

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}"
        return text + (f"\n\n### Input:\n{input}" if input else "")

    def response_text(self, output: str) -> str:
        return f"\n\n### Response:\n{output}"

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        _check_messages(messages)
        preamble = ALPACA_PREAMBLE
        parts: list[str] = []
        for message in messages:
            if message["role"] == "system":
                preamble = message["content"]
            elif message["role"] == "user":
                parts.append(f"\n\n### Instruction:\n{message['content']}")
            else:
                parts.append(self.response_text(message["content"]))
        return preamble + "".join(parts) + self.response_text("")

    def clean_response(self, text: str) -> str:
        return text.replace("### Response:", "").strip()


class Phi3(PromptStyle):
    """The book's exercise 7.1: ``<|user|>\\n{instruction}[\\n{input}]`` then
    ``\\n<|assistant|>:\\n{output}``."""

    name = "phi3"
    summary = "The book's exercise 7.1: '<|user|>' ... '<|assistant|>:' (Phi-3)."
    stop = ("\n<|user|>",)

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        return f"<|user|>\n{instruction}" + (f"\n{input}" if input else "")

    def response_text(self, output: str) -> str:
        return f"\n<|assistant|>:\n{output}"

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        _check_messages(messages)
        parts: list[str] = []
        for message in messages:
            if message["role"] == "assistant":
                parts.append(self.response_text(message["content"]))
            else:  # Phi-3 has no system turn: a system message is a user turn
                parts.append(
                    ("\n" if parts else "") + f"<|user|>\n{message['content']}"
                )
        return "".join(parts) + self.response_text("")

    def clean_response(self, text: str) -> str:
        return text.replace("<|assistant|>:", "").strip()


class ChatTemplate(PromptStyle):
    """A Jinja chat template as Hugging Face tokenizers carry it
    (``tokenizer_config.json``'s ``chat_template``), rendered with
    ``messages``, ``add_generation_prompt=True``, ``bos_token`` and
    ``eos_token``. A book-format record is one user message (instruction, a
    blank line, input) and one assistant reply."""

    name = "chat-template"
    summary = "The checkpoint tokenizer's own Jinja chat template."

    @dataclass(frozen=True)
    class Options:
        template: str = field(
            default="", metadata={"help": "the Jinja chat template (its source)"}
        )
        bos_token: str = field(default="", metadata={"help": "the BOS token text"})
        eos_token: str = field(default="", metadata={"help": "the EOS token text"})

        def validate(self) -> None:
            if not self.template.strip():
                raise ValueError(
                    "needs a template: the model's tokenizer carries no chat"
                    " template; choose another prompt style (alpaca, phi3)"
                )

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._compiled: Any = None

    def render(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool
    ) -> str:
        """The template applied to ``messages``."""
        if self._compiled is None:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise GptkitError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
            )
            env.globals["raise_exception"] = raise_exception
            try:
                self._compiled = env.from_string(self.options.template)
            except jinja2.TemplateError as exc:
                raise GptkitError(f"the chat template does not parse: {exc}") from None
        import jinja2

        try:
            return self._compiled.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.options.bos_token,
                eos_token=self.options.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise GptkitError(f"the chat template failed: {exc}") from None

    @staticmethod
    def _user(instruction: str, input: str) -> dict[str, str]:
        return {
            "role": "user",
            "content": instruction + (f"\n\n{input}" if input else ""),
        }

    def instruction_prompt(self, instruction: str, input: str = "") -> str:
        return self.chat_prompt([self._user(instruction, input)])

    def response_text(self, output: str) -> str:
        # The reply as the template closes it (its end-of-turn marker included).
        user = self._user("", "")
        prompt = self.render([user], add_generation_prompt=True)
        full = self.render(
            [user, {"role": "assistant", "content": output}],
            add_generation_prompt=False,
        )
        if not full.startswith(prompt):
            return full[len(self.render([user], add_generation_prompt=False)) :]
        return full[len(prompt) :]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        _check_messages(messages)
        return self.render(messages, add_generation_prompt=True)
