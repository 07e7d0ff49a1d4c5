"""``gptkit finetune``: the command line of :func:`gptkit.finetune`; the
``train`` command with :class:`~gptkit.core.settings.FinetuneSettings` (the
same trainer, checkpoints, resume and launcher)."""

from __future__ import annotations

from gptkit.api.settings import FinetuneSettings
from gptkit.cli.train import make_train_command

finetune = make_train_command(
    FinetuneSettings,
    doc="""Finetune a model on instruction data (the book's chapter 7); writes a run.

    Each record becomes a prompt in a prompt style (alpaca by default, the
    book's "Below is an instruction that describes a task..." template) plus
    its response; batches are padded with <|endoftext|> and the padding is
    left out of the loss. The defaults are the book's: 85% / 10% / 5% train /
    test / validation split, batch 8, AdamW lr 5e-5 and weight decay 0.1, 2
    epochs, no dropout, an evaluation every 5 steps over 5 batches, and after
    each epoch a greedy sample of the first validation instruction. After
    training, the test records' responses (greedy, up to 256 tokens) are
    written to RUN/responses.json in the book's format. The run records its
    prompt style: generate, chat and serve on --weights RUN apply it.

    \b
    Examples:
      gptkit finetune --weights hf:gpt2-medium --data instruction-data
      gptkit finetune --weights book:model.pth --data instruction-data.json \\
          --n-heads 12 --seed 123                   # the book's own starting weights
      gptkit finetune --weights RUN --data chats.jsonl --mask-instructions
      gptkit finetune --weights hf:gpt2 --data instruction-data --prompt-style phi3
      gptkit finetune --resume runs/20261206-190000
      gptkit generate --weights runs/20261206-190000 "Rewrite: The car is fast."
    """,
)
