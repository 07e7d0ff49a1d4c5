"""``gptkit serve`` driven by the official ``openai`` client: completions with
and without streaming, n, stop, seeds, logprobs, a plugin sampler through the
extension fields; served text equals ``gptkit generate``'s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve_harness import MODEL_NAME, ServerProcess, save_tiny_run

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

PROMPT = "Every effort moves you"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def server(run_dir: Path):
    proc = ServerProcess(run_dir, "--max-batch-size", "8")
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    return server.client()


def generate_cli(cli_run, run_dir: Path, prompt: str, *args: str) -> dict:
    result = cli_run("generate", "--weights", str(run_dir), prompt, "--json", *args)
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["results"]
    return row


def streamed(client, **kwargs) -> tuple[dict[int, str], dict[int, str], list]:
    """(text by choice index, finish reason by index, chunks) of a streamed call."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    chunks = list(client.completions.create(stream=True, **kwargs))
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason is not None:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, chunks


def test_greedy_completion_equals_gptkit_generate(client, cli_run, run_dir):
    response = client.completions.create(
        model=MODEL_NAME, prompt=PROMPT, max_tokens=20, temperature=0
    )
    expected = generate_cli(cli_run, run_dir, PROMPT, "--max-new-tokens", "20")
    [choice] = response.choices
    assert choice.text == expected["completion"]
    assert choice.finish_reason == "length"
    assert response.model == MODEL_NAME
    assert response.object == "text_completion"
    assert response.usage.prompt_tokens == len(expected["prompt_ids"])
    assert response.usage.completion_tokens == 20
    assert response.usage.total_tokens == response.usage.prompt_tokens + 20


def test_seeded_sampling_equals_gptkit_generate(client, cli_run, run_dir):
    response = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=16,
        temperature=0.8,
        top_p=0.9,
        seed=7,
    )
    expected = generate_cli(
        cli_run,
        run_dir,
        PROMPT,
        "--max-new-tokens",
        "16",
        "--top-p",
        "0.9",
        "--temperature",
        "0.8",
        "--seed",
        "7",
    )
    assert response.choices[0].text == expected["completion"]


def test_a_seed_reproduces_and_choice_i_uses_seed_plus_i(client):
    args = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=12, seed=11)
    first = client.completions.create(n=3, **args)
    again = client.completions.create(n=3, **args)
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert len(set(texts)) == 3  # three different samples
    second = client.completions.create(**{**args, "seed": 12})
    assert second.choices[0].text == texts[1]
    assert first.usage.completion_tokens == 36


def test_streamed_text_equals_the_non_streamed_text(client):
    args = dict(
        model=MODEL_NAME, prompt=["The list", PROMPT], max_tokens=14, seed=3, n=2
    )
    whole = client.completions.create(**args)
    texts, reasons, chunks = streamed(client, **args)
    assert texts == {c.index: c.text for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert len(chunks) > 4 * 2  # token by token, not one block
    assert all(chunk.id == chunks[0].id for chunk in chunks)


def test_stream_options_include_usage(client):
    _, _, chunks = streamed(
        client,
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=5,
        temperature=0,
        stream_options={"include_usage": True},
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_prompts_as_strings_or_token_ids_and_n(client):
    from gptkit.core.tokenizer import encode

    as_text = client.completions.create(
        model=MODEL_NAME,
        prompt=["The list", PROMPT],
        max_tokens=6,
        temperature=0,
        n=2,
    )
    as_ids = client.completions.create(
        model=MODEL_NAME,
        prompt=[encode("The list"), encode(PROMPT)],
        max_tokens=6,
        temperature=0,
        n=2,
    )
    assert [c.index for c in as_text.choices] == [0, 1, 2, 3]
    assert [c.text for c in as_text.choices] == [c.text for c in as_ids.choices]
    assert as_text.choices[0].text == as_text.choices[1].text  # greedy: same
    assert as_text.choices[0].text != as_text.choices[2].text
    assert as_text.usage.prompt_tokens == len(encode("The list") + encode(PROMPT))


def test_stop_strings_cut_the_text_in_both_modes(client):
    args = dict(model=MODEL_NAME, prompt=PROMPT, temperature=0)
    full = client.completions.create(max_tokens=30, **args).choices[0].text
    words = full.split()
    stop = " " + words[len(words) // 2]  # a word from the middle of the text
    cut = full[: full.index(stop)]
    response = client.completions.create(max_tokens=30, stop=[stop, "@@@"], **args)
    assert response.choices[0].text == cut
    assert response.choices[0].finish_reason == "stop"
    texts, reasons, _ = streamed(client, max_tokens=30, stop=stop, **args)
    assert texts == {0: cut}
    assert reasons == {0: "stop"}


def test_echo_and_logprobs(client):
    from gptkit.core.tokenizer import encode

    response = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=5,
        temperature=0,
        logprobs=2,
        echo=True,
    )
    [choice] = response.choices
    assert choice.text.startswith(PROMPT)
    lp = choice.logprobs
    prompt_len = len(encode(PROMPT))
    assert len(lp.tokens) == prompt_len + 5
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])
    # greedy: every generated token is the most likely one
    for token, value, top in zip(
        lp.tokens[prompt_len:],
        lp.token_logprobs[prompt_len:],
        lp.top_logprobs[prompt_len:],
        strict=True,
    ):
        assert value == pytest.approx(max(top.values()), abs=1e-5)
        assert token in top
    assert lp.text_offset[prompt_len] == len(PROMPT)


def test_a_plugin_sampler_through_the_extension_fields(client, cli_run, run_dir):
    from gptkit.core.registry import get_registry

    if "locally-typical" not in get_registry().samplers:
        pytest.skip("the example plugin is not installed")
    response = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=12,
        seed=5,
        temperature=0.9,
        extra_body={"sampler": "locally-typical", "sampler_options": {"mass": 0.5}},
    )
    expected = generate_cli(
        cli_run,
        run_dir,
        PROMPT,
        "--max-new-tokens",
        "12",
        "--sampler",
        "locally-typical",
        "-o",
        "mass=0.5",
        "-o",
        "temperature=0.9",
        "--seed",
        "5",
    )
    assert response.choices[0].text == expected["completion"]


def test_beam_search_through_the_extension_fields(client, cli_run, run_dir):
    response = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=8,
        extra_body={
            "sampler": "beam",
            "sampler_options": {"num_beams": 3, "num_return_sequences": 2},
        },
    )
    result = cli_run(
        "generate",
        "--weights",
        str(run_dir),
        PROMPT,
        "--json",
        "--max-new-tokens",
        "8",
        "--num-beams",
        "3",
        "-o",
        "num_return_sequences=2",
    )
    expected = [r["completion"] for r in json.loads(result.stdout)["results"]]
    assert [c.text for c in response.choices] == expected


def test_penalties_discourage_repeats(client):
    """A bias makes the greedy text repeat "." (token 13); each penalty, OpenAI's
    or gptkit's, takes most of the repeats away."""
    args = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=40, temperature=0)

    def dots(**extra) -> int:
        response = client.completions.create(**args, **extra)
        return response.choices[0].text.count(".")

    biased = dots(logit_bias={"13": 2})
    assert biased >= 6
    assert dots(logit_bias={"13": 100}) == 40
    for penalty in (
        {"frequency_penalty": 2.0},
        {"presence_penalty": 2.0},
        {"extra_body": {"repetition_penalty": 3.0}},
        {
            "extra_body": {
                "sampler": "greedy",
                "sampler_options": {"no_repeat_ngram_size": 1},
            }
        },
    ):
        assert dots(logit_bias={"13": 2}, **penalty) <= biased // 3, penalty


def test_models_and_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    health = server.health()
    assert health["http_status"] == 200 and health["status"] == "ok"


def test_metrics_and_one_log_line_per_request(client, server):
    client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=3)
    status, _, text = server.request("GET", "/metrics")
    assert status == 200
    assert 'gptkit_requests_total{route="/v1/completions",status="200"}' in text
    assert "gptkit_time_to_first_token_seconds_count" in text
    assert "process_resident_memory_bytes" in text
    lines = [ln for ln in server.log().splitlines() if '"POST /v1/completions"' in ln]
    assert lines and all(" 200 " in ln or " 4" in ln for ln in lines)
    assert any("prompt=1 completion=3" in ln and "latency=" in ln for ln in lines)
