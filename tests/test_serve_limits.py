"""Issue 22 against a real ``gptkit serve``: the limits on one request's work,
the operator's drafts, isolation of a bad request, hostile clients (slow,
vanishing, forging log lines). Each test reproduces a fault of the issue."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.serve_harness import (
    API_KEY_ENV,
    MODEL_NAME,
    ServerProcess,
    http_request,
    save_tiny_run,
    wait_until,
)

pytest.importorskip("uvicorn")
pytest.importorskip("openai")

pytestmark = pytest.mark.slow

KEY = "sk-limits-5b1e"
AUTH = {"Authorization": f"Bearer {KEY}"}
READ_TIMEOUT_S = 2.0
GOOD = {"model": MODEL_NAME, "prompt": "Every effort moves you", "max_tokens": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-limits")
    return {
        "model": save_tiny_run(root / "model"),
        "draft": save_tiny_run(root / "draft", seed=7),
        "other": save_tiny_run(root / "other", seed=8),
    }


@pytest.fixture(scope="module")
def server(runs):
    proc = ServerProcess(
        runs["model"],
        "--max-batch-size", "2",
        "--max-queue", "4",
        "--request-timeout", "20",
        "--read-timeout", str(READ_TIMEOUT_S),
        "--api-key-env", API_KEY_ENV,
        "--draft", f"tiny-draft={runs['draft']}",
        faults=True,
        env={API_KEY_ENV: KEY},
    )  # fmt: skip
    yield proc
    assert proc.stop() == 0, proc.log()


def post(server: ServerProcess, body, headers=None):
    return server.request("POST", "/v1/completions", body, {**AUTH, **(headers or {})})


def assert_400(response, param=None, code=None, fragment=""):
    status, _, body = response
    assert status == 400, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert fragment in error["message"], error


def no_tracebacks(server: ServerProcess) -> None:
    assert "Traceback" not in server.log()


def test_the_limits_are_shown_in_v1_models(server):
    status, _, body = server.request("GET", "/v1/models", headers=AUTH)
    assert status == 200
    limits = body["data"][0]["limits"]
    assert limits["max_prompts"] == 4
    assert limits["max_n"] == limits["max_beams"] == 2
    assert limits["max_request_tokens"] == 2 * 128
    assert limits["max_stop_strings"] == 4 and limits["max_logit_bias"] == 300
    assert limits["drafts"] == ["tiny-draft"]


# -- fault 1: unbounded beams --------------------------------------------------------


def test_a_search_wider_than_the_batch_is_400_before_any_allocation(server):
    before = server.rss_bytes()
    for beams in (5000, 10**6):
        body = {**GOOD, "sampler": "beam", "sampler_options": {"num_beams": beams}}
        start = time.monotonic()
        assert_400(post(server, body), "sampler_options", "request_too_large", "2")
        assert time.monotonic() - start < 5  # the old server took 40 s
    assert server.rss_bytes() - before < 50 * 2**20
    ok = {**GOOD, "sampler": "beam", "sampler_options": {"num_beams": 2}}
    assert post(server, ok)[0] == 200


def test_a_request_asking_for_more_tokens_than_the_limit_is_400(server):
    body = {**GOOD, "prompt": ["a", "b"], "n": 2, "max_tokens": 100}
    assert_400(post(server, body), "max_tokens", "request_too_large", "at most 256")
    assert post(server, {**body, "max_tokens": 60})[0] == 200


# -- fault 8: a huge prompt list -----------------------------------------------------


def test_more_prompts_than_the_server_takes_is_400_and_health_answers(server):
    assert_400(
        post(server, {**GOOD, "prompt": ["a"] * 5}), "prompt", "too_many_prompts"
    )
    body = json.dumps({**GOOD, "prompt": [""] * 340_000}, separators=(",", ":"))
    body = body.encode()
    assert len(body) < 2**20
    answer: dict = {}

    def big() -> None:
        answer["response"] = post(server, body)

    thread = threading.Thread(target=big)
    thread.start()
    slowest = 0.0
    while thread.is_alive():
        start = time.monotonic()
        assert server.health()["status"] == "ok"
        slowest = max(slowest, time.monotonic() - start)
    thread.join()
    assert_400(answer["response"], "prompt", "too_many_prompts", "340000")
    assert slowest < 1.0


# -- fault 2: only the operator's drafts ---------------------------------------------


def test_requests_name_only_the_drafts_the_operator_loaded(server, runs):
    def speculative(**options):
        return {
            **GOOD,
            "sampler": "speculative",
            "sampler_options": {"draft": "tiny-draft", **options},
        }

    messages = set()
    for spec in (
        "/etc/passwd",
        "/no/such/file",
        "book:/etc/passwd",
        str(runs["other"]),
        "hf:gpt2-xl",
        5,
    ):
        status, _, body = post(server, speculative(draft=spec))
        assert status == 400, body
        assert body["error"]["code"] == "unknown_draft"
        messages.add(body["error"]["message"])
    assert len(messages) == 1  # the same answer whether a path exists or not
    assert "tiny-draft" in messages.pop()
    no_draft = {**GOOD, "sampler": "speculative"}
    assert_400(post(server, no_draft), "sampler_options.draft", "missing_option")
    assert_400(
        post(server, speculative(draft_quantize="int4:group_size=7")),
        "sampler_options.draft_quantize",
        "operator_only",
    )
    greedy = post(server, {**GOOD, "temperature": 0})[2]["choices"][0]["text"]
    status, _, body = post(server, speculative())
    assert status == 200, body
    assert body["choices"][0]["text"] == greedy  # greedy speculation: the model's
    no_tracebacks(server)


# -- fault 3: a bad seed fails its own request alone ---------------------------------


def test_a_bad_seed_fails_only_its_own_request(server):
    innocent = {**GOOD, "temperature": 0, "max_tokens": 8}
    expected = post(server, innocent)[2]["choices"][0]["text"]
    outcomes: dict[str, list] = {"innocent": [], "bad": [], "edge": []}

    def send(kind: str, body: dict) -> None:
        outcomes[kind].append(post(server, body))

    bodies = [("innocent", innocent)] * 2  # with the queue of 4: none waits out
    bodies += [("bad", {**GOOD, "seed": 2**64}), ("bad", {**GOOD, "seed": 2**70})]
    bodies += [("edge", {**GOOD, "seed": 2**63 - 1, "n": 2, "temperature": 1.0})]
    bodies += [("innocent", innocent)]
    threads = [threading.Thread(target=send, args=b) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for status, _, body in outcomes["innocent"]:
        assert status == 200, body
        assert body["choices"][0]["text"] == expected
    for response in outcomes["bad"]:
        assert_400(response, "seed", fragment="less than or equal")
    [(status, _, body)] = outcomes["edge"]
    assert status == 200 and len(body["choices"]) == 2, body
    no_tracebacks(server)


# -- fault 5 (server part): a million whitespace characters --------------------------


def test_a_million_whitespace_characters_are_400_not_500(server):
    body = {**GOOD, "prompt": " " * 1_000_000}
    assert_400(post(server, body), "prompt", "context_length_exceeded", "1000000")


# -- fault 14: 400, not 500 ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {**GOOD, "logit_bias": {"²": 1}},
        {**GOOD, "logit_bias": {"9" * 5000: 1}},
        {**GOOD, "logit_bias": {"99999": 1}},
    ],
)
def test_logit_bias_keys_that_are_not_token_ids_are_400(server, body):
    assert_400(post(server, body), "logit_bias")


# -- fault 19 (server parts) ---------------------------------------------------------


def test_the_bearer_scheme_is_case_insensitive(server):
    for header in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY}"):
        assert post(server, GOOD, {"Authorization": header})[0] == 200, header
    for header in (f"Basic {KEY}", f"bearer {KEY}x", "bearer", KEY):
        assert post(server, GOOD, {"Authorization": header})[0] == 401, header


def test_a_long_stop_string_does_not_turn_a_stream_into_one_chunk(server):
    client = server.client(api_key=KEY)
    chunks = [
        c.choices[0].text
        for c in client.completions.create(
            **{**GOOD, "max_tokens": 20},
            temperature=0,
            stop=["z" * 900],
            stream=True,
        )
        if c.choices and c.choices[0].text
    ]
    assert len(chunks) >= 10, chunks


# -- fault 11: log injection ---------------------------------------------------------


def test_control_characters_in_a_path_are_escaped_in_the_log(server):
    forged = '127.0.0.1:1 "GET /forged" 200'
    path = "/v1/models%0A" + forged.replace(" ", "%20").replace('"', "%22")
    status, _, _ = server.request("GET", path)
    assert status == 401
    assert wait_until(lambda: "\\x0a" in server.log(), 5)
    assert not any(line.startswith(forged) for line in server.log().splitlines())


# -- fault 10: clients that vanish or dawdle -----------------------------------------


def _head(length: int) -> bytes:
    return (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_client_that_disconnects_mid_body_is_no_500(server):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_head(1000) + b'{"model": "tiny-test", "prom')
            time.sleep(0.2)
    time.sleep(0.5)
    _, _, metrics = server.request("GET", "/metrics")
    assert 'status="500"' not in metrics
    assert re.search(
        r'gptkit_requests_total\{route="/v1/completions",status="499"\}', metrics
    )
    no_tracebacks(server)
    assert server.health()["status"] == "ok"


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_clients_are_cut_off_at_the_read_timeout(server):
    socks = []
    for i in range(24):
        sock = socket.create_connection(("127.0.0.1", server.port))
        if i % 2:  # headers never finished
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        else:  # a body that never comes
            sock.sendall(_head(500) + b"{")
        socks.append(sock)
    start = time.monotonic()
    try:
        assert all(_closed_by_server(s, READ_TIMEOUT_S + 5) for s in socks)
        assert time.monotonic() - start < READ_TIMEOUT_S + 5
    finally:
        for sock in socks:
            sock.close()
    assert server.health()["status"] == "ok"
    # a client that keeps its connection and sends requests in time is served
    status, _, _ = post(server, GOOD)
    assert status == 200


# -- fault 12 (server part) and JSON logs: a model with a small vocabulary -----------


def _save_tiny(run: Path, **changes) -> Path:
    import torch

    from gptkit.core.checkpoints.native import save_checkpoint
    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel

    cfg = get_preset("tiny").replace(context_length=64, **changes)
    torch.manual_seed(0)
    save_checkpoint(run / "checkpoints", 1, GPTModel(cfg).eval(), cfg)
    return run


@pytest.fixture(scope="module")
def json_log_server(tmp_path_factory: pytest.TempPathFactory):
    run = _save_tiny(tmp_path_factory.mktemp("json-log") / "run")
    proc = ServerProcess(run, "--log-json", "--read-timeout", str(READ_TIMEOUT_S))
    yield proc
    assert proc.stop() == 0, proc.log()


def test_a_model_with_a_small_vocabulary_is_refused_at_start(tmp_path, cli_run):
    """A model whose vocabulary (1,000) cannot hold its tokenizer's ids (GPT-2's
    50,257) is refused in one line before the server starts, not served with
    text prompts that would index past its embedding."""
    run = _save_tiny(tmp_path / "run", vocab_size=1000)
    result = cli_run("serve", "--weights", str(run), "--port", "0")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.stderr
    assert "has a vocabulary of 1,000" in line and "50,257 ids" in line


def test_every_log_line_is_json_even_uvicorns(json_log_server):
    server = json_log_server
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn: invalid request
        sock.recv(4096)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock, READ_TIMEOUT_S + 5)  # logged
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = _head(1000).replace(f"Authorization: Bearer {KEY}\r\n".encode(), b"")
        sock.sendall(head + b"{")
    time.sleep(0.5)
    http_request(server.port, "GET", "/health")
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert any("Invalid HTTP request" in line for line in lines), lines
    assert any("read timeout" in line or "no whole request" in line for line in lines)
    for line in lines:
        json.loads(line)  # every line, uvicorn's too
