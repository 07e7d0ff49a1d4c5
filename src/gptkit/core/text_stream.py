"""Token ids -> text deltas for one sequence, with stop strings (torch-free).

A streamed completion must never show text it will take back: an incomplete
UTF-8 character (GPT-2's byte-level BPE splits characters across tokens) and
any tail that could be the start of a stop string are held back until the next
token settles them. When a stop string appears, the text before it is released
and the stream ends; the stop string itself is never shown (OpenAI's
convention, and what ``generate_text`` returns for ``stop_strings``).

Decoding is incremental: only the ids since the last complete character are
decoded again, so a token costs O(1), not O(length).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[list[int]], str]

_REPLACEMENT = "\ufffd"


def _gpt2_decode(ids: list[int]) -> str:
    from gptkit.core.tokenizer import decode

    return decode(ids)


class TextStream:
    """Incremental detokenizer of one sequence.

    ``push(token)`` returns the text that became final (possibly ``""``);
    :attr:`stopped` turns True when a stop string appeared, and :attr:`text`
    is then the completion cut before it. ``flush()`` releases whatever was held
    back when the sequence ends for another reason.
    """

    def __init__(self, stop_strings: Sequence[str] = (), decode: Decode | None = None):
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._decode = decode or _gpt2_decode
        self._pending: list[int] = []  # ids after the last complete character
        self._clean = ""  # decoded text of every id before them
        self.sent = 0  # characters of _clean released so far
        self.stopped = False

    @property
    def text(self) -> str:
        """The text released so far (after a stop: the whole completion)."""
        return self._clean[: self.sent]

    def push(self, token: int) -> str:
        """Add one token; return the newly released text."""
        if self.stopped:
            return ""
        self._pending.append(token)
        piece = self._decode(self._pending)
        if piece.endswith(_REPLACEMENT):
            return ""  # an incomplete character: wait for its other bytes
        self._clean += piece
        self._pending = []
        return self._release(final=False)

    def flush(self) -> str:
        """Release everything held back (the sequence ended)."""
        if self.stopped:
            return ""
        if self._pending:
            self._clean += self._decode(self._pending)
            self._pending = []
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text, start = self._clean, self.sent
        hit = min(
            (i for i in (text.find(s, start) for s in self.stop_strings) if i >= 0),
            default=-1,
        )
        if hit >= 0:
            self.stopped = True
            self._clean = text[:hit]
            self.sent = hit
            return text[start:hit]
        end = len(text) if final else len(text) - self._held_back(text, start)
        self.sent = end
        return text[start:end]

    def _held_back(self, text: str, start: int) -> int:
        """Length of the longest tail of ``text[start:]`` that begins a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(text) - start), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
