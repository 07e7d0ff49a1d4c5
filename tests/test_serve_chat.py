"""``POST /v1/chat/completions`` on a model finetuned in the test, driven by the
official ``openai`` client: streamed and not, n, seed, stop, logprobs; the
reply equals ``LanguageModel.chat``'s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve_harness import MODEL_NAME, ServerProcess

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MESSAGES = [{"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    import gptkit

    data_file = SHARED / "instruction-data.json"
    if not data_file.is_file():
        pytest.skip("no shared instruction-data.json")
    root = tmp_path_factory.mktemp("chat")
    data = root / "small.json"
    data.write_text(json.dumps(json.loads(data_file.read_text())[:24]))
    run = root / "sft"
    gptkit.finetune(
        data=str(data), preset="tiny", context_length=128, lr=1e-3, epochs=1,
        loggers=["jsonl"], test_responses=0, out=str(run),
    )  # fmt: skip
    return run


@pytest.fixture(scope="module")
def server(tuned):
    proc = ServerProcess(tuned, "--max-batch-size", "4")
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_chat_reply_equals_the_python_api(client, tuned):
    import gptkit

    response = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=12, temperature=0
    )
    assert response.object == "chat.completion"
    [choice] = response.choices
    assert choice.message.role == "assistant"
    lm = gptkit.load(str(tuned), device="cpu")
    assert choice.message.content == lm.chat(MESSAGES, max_new_tokens=12)
    assert response.usage.completion_tokens <= 12


def test_streamed_chat_equals_the_non_streamed(client):
    kwargs = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=12, n=2,
                  temperature=1.0, seed=7)  # fmt: skip
    whole = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
    )
    texts: dict[int, str] = {}
    roles, reasons = set(), {}
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            if choice.delta.role:
                roles.add((choice.index, choice.delta.role))
            texts[choice.index] = texts.get(choice.index, "") + (
                choice.delta.content or ""
            )
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert roles == {(0, "assistant"), (1, "assistant")}
    assert {i: t.strip() for i, t in texts.items()} == {
        c.index: c.message.content for c in whole.choices
    }
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_chat_logprobs_and_stop(client):
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=6, logprobs=True,
        top_logprobs=2, temperature=0,
    )  # fmt: skip
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in content)
    first = content[0].token
    stopped = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        max_tokens=6,
        stop=[first],
        temperature=0,
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert first not in stopped.choices[0].message.content


def test_chat_requests_are_counted_under_their_route(client, server):
    client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=2)
    status, _, text = server.request("GET", "/metrics")
    assert status == 200
    # its own label, not "other"
    assert 'gptkit_requests_total{route="/v1/chat/completions",status="200"}' in text


def test_bad_chat_requests_are_400(client):
    import openai

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "robot", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)


def test_gptkit_judge_through_a_local_gptkit_serve(server, tmp_path, cli_run):
    """The book's scoring prompt sent to an OpenAI-compatible endpoint (here
    gptkit serve itself: no other model is reachable); a tiny model's answers
    are not integers, so they are counted as unscored, as the book counts them."""
    from gptkit.api.judge import judge_prompt

    entry = {"instruction": "Name a color.", "input": "", "output": "Blue.",
             "model_response": "Red."}  # fmt: skip
    assert judge_prompt(entry).startswith(
        "Given the input `Below is an instruction that describes a task."
    )
    assert judge_prompt(entry).endswith(
        "score the model response `Red.` on a scale from 0 to 100, where 100 is"
        " the best score. Respond with the integer number only."
    )
    path = tmp_path / "responses.json"
    path.write_text(json.dumps([entry, {**entry, "model_response": "Blue."}]))
    result = cli_run("judge", str(path), "--endpoint", f"{server.url}/v1",
                     "--model", MODEL_NAME, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    assert len(scores) == 2 and all(s is None or 0 <= s <= 999 for s in scores)
    bad = cli_run("judge", str(path), "--endpoint", f"{server.url}/v1",
                  "--model", "gpt-9")  # fmt: skip
    assert bad.exit_code == 2 and "answered 404" in bad.stderr
