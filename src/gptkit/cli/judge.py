"""``gptkit judge``: score a finetuned model's responses with an LLM judge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gptkit.cli.flags import echo_json


@click.command()
@click.argument("responses", type=click.Path(path_type=Path))
@click.option(
    "--endpoint",
    required=True,
    metavar="URL",
    help="An OpenAI-compatible API (http://127.0.0.1:8000/v1: gptkit serve,"
    " Ollama, vLLM).",
)
@click.option("--model", required=True, help="The judge model's name there.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer key, if needed.")
@click.option("--json", "json_", is_flag=True, help="Print the scores as JSON.")
def judge(responses: Path, **opts: Any) -> None:
    """Score RESPONSES (a run's responses.json) 0-100 with an LLM judge.

    Each response is sent with the book's chapter-7 prompt ("Given the input
    ... and correct output ..., score the model response ... on a scale from 0
    to 100 ... Respond with the integer number only."), greedily; answers that
    are not an integer are counted and left out of the mean, as the book does.

    \b
    Examples:
      gptkit judge runs/sft/responses.json --endpoint http://127.0.0.1:11434/v1 \\
          --model llama3
    """
    from gptkit.api.judge import judge as run_judge

    result = run_judge(
        responses,
        endpoint=opts["endpoint"],
        model=opts["model"],
        api_key=opts["api_key"],
    )
    if opts["json_"]:
        echo_json({"scores": result.scores, "mean": result.mean})
        return
    n, scored = len(result.scores), len(result.scored)
    mean = f"{result.mean:.2f}" if result.mean is not None else "none"
    click.echo(f"scored {scored} of {n} responses; mean score {mean}")
