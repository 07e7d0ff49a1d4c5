"""Bad input and faults against a real ``gptkit serve``: each gets OpenAI's
error object with the right status, and the server keeps serving. The test
samplers ``slow`` and ``explode`` come from tests/serve_with_faults.py."""

from __future__ import annotations

import http.client
import json
import signal
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

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

KEY = "sk-test-3f9a8c1e77d2"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT_S = 5.0
DRAIN_S = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("serve-faults") / "run")


@pytest.fixture(scope="module")
def server(run_dir: Path):
    proc = ServerProcess(
        run_dir,
        "--max-batch-size", "2",
        "--max-queue", "2",
        "--request-timeout", str(TIMEOUT_S),
        "--drain-timeout", str(DRAIN_S),
        "--max-body-bytes", "4096",
        "--api-key-env", API_KEY_ENV,
        "--log-json",
        faults=True,
        env={API_KEY_ENV: KEY},
    )  # fmt: skip
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    return server.client(api_key=KEY)


def post(server: ServerProcess, body, headers=None):
    return server.request("POST", "/v1/completions", body, {**AUTH, **(headers or {})})


def assert_error(response, status: int, param=None, code=None, fragment=""):
    got_status, _, body = response
    assert got_status == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert fragment in error["message"], error
    assert error["type"] in ("invalid_request_error", "server_error", "timeout_error")


GOOD = {"model": MODEL_NAME, "prompt": "Every effort moves you", "max_tokens": 5}


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        (b'{"model": "tiny-test", "prompt": ', 400, None, "not valid JSON"),
        (b"[1, 2]", 400, None, "JSON object"),
        ({**GOOD, "max_tokens": "5"}, 400, "max_tokens", "valid integer"),
        ({**GOOD, "temperature": "hot"}, 400, "temperature", "valid number"),
        ({**GOOD, "prompt": 5}, 400, "prompt", "must be a string"),
        ({**GOOD, "prompt": [1, "a"]}, 400, "prompt", "must be a string"),
        ({**GOOD, "stream": "yes"}, 400, "stream", "valid boolean"),
        ({**GOOD, "stop": [1]}, 400, "stop", "string"),
        ({**GOOD, "frobnicate": 1}, 400, "frobnicate", "Unrecognized request"),
        ({"prompt": "x"}, 400, "model", "missing"),
        ({**GOOD, "max_tokens": 0}, 400, "max_tokens", "greater than or equal"),
        ({**GOOD, "max_tokens": -3}, 400, "max_tokens", "greater than or equal"),
        ({**GOOD, "max_tokens": 500}, 400, "max_tokens", "too large"),
        ({**GOOD, "prompt": "word " * 200}, 400, "prompt", "at most 127"),
        ({**GOOD, "prompt": [[70000]]}, 400, "prompt", "outside the vocabulary"),
        ({**GOOD, "temperature": 2.5}, 400, "temperature", "less than or equal"),
        ({**GOOD, "n": 3}, 400, "n", "at most 2"),
        ({**GOOD, "sampler": "nonesuch"}, 400, "sampler", "unknown sampler"),
        ({**GOOD, "sampler": "top-k", "sampler_options": {"top_k": 0}}, 400,
         "sampler_options", "must be >= 1"),
        ({**GOOD, "sampler": "top-k", "sampler_options": {"bogus": 1}}, 400,
         "sampler_options", "unknown option bogus"),
        ({**GOOD, "sampler": "greedy", "top_p": 0.5}, 400, "top_p", "no option"),
        ({**GOOD, "sampler_options": {"top_k": 3}}, 400, "sampler_options",
         "needs a sampler"),
        ({**GOOD, "sampler": "beam", "stream": True}, 400, "stream", "cannot stream"),
        ({**GOOD, "logit_bias": {"x": 1}}, 400, "logit_bias", "token ids"),
        ({**GOOD, "suffix": "end"}, 400, "suffix", "not supported"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors(server, body, status, param, fragment):
    assert_error(post(server, body), status, param, fragment=fragment)


def test_the_server_keeps_serving_after_bad_input(server, client):
    post(server, b"{nope")
    response = client.completions.create(**GOOD)
    assert response.choices[0].finish_reason == "length"
    assert server.health()["status"] == "ok"


def test_unknown_model_is_404_and_the_client_raises_not_found(server, client):
    assert_error(
        post(server, {**GOOD, "model": "gpt-9"}), 404, "model", "model_not_found"
    )
    with pytest.raises(openai.NotFoundError):
        client.completions.create(**{**GOOD, "model": "gpt-9"})
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**{**GOOD, "max_tokens": 0})


def test_routes_and_methods(server):
    assert_error(server.request("GET", "/v2/nothing", headers=AUTH), 404)
    assert_error(server.request("GET", "/v1/completions", headers=AUTH), 405)
    # A model with no prompt style (not finetuned by gptkit) cannot chat.
    message = {"role": "user", "content": "Hi"}
    body = {"model": MODEL_NAME, "messages": [message], "max_tokens": 5}
    chat = server.request("POST", "/v1/chat/completions", body, AUTH)
    assert_error(chat, 400, code="no_prompt_style", fragment="no prompt style")


def test_api_key_missing_or_wrong_is_401_and_never_logged(server):
    assert_error(
        server.request("POST", "/v1/completions", GOOD), 401, code="invalid_api_key"
    )
    wrong = {"Authorization": f"Bearer {KEY[:-1]}x"}
    assert_error(
        server.request("POST", "/v1/completions", GOOD, wrong),
        401,
        code="invalid_api_key",
    )
    assert_error(server.request("GET", "/v1/models"), 401)
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").completions.create(**GOOD)
    assert server.health()["status"] == "ok"  # /health needs no key
    assert KEY not in server.log()
    assert KEY[:8] not in server.log()


def test_an_over_large_body_is_413(server):
    big = {**GOOD, "prompt": "x" * 5000}
    assert_error(post(server, big), 413, code="request_too_large")
    # without a Content-Length: chunked, refused once past the limit
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = json.dumps(big).encode()
    conn.putrequest("POST", "/v1/completions")
    for name, value in {**AUTH, "Transfer-Encoding": "chunked"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    for start in range(0, len(body), 1000):
        piece = body[start : start + 1000]
        conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "request_too_large"
    conn.close()


def test_a_failure_inside_generation_fails_that_request_alone(server, client):
    prompt = "The list of things"
    greedy = {**GOOD, "prompt": prompt, "max_tokens": 20, "temperature": 0}
    alone = client.completions.create(**greedy)
    results: dict[str, object] = {}

    def good() -> None:
        results["good"] = client.completions.create(**greedy)

    thread = threading.Thread(target=good)
    thread.start()
    with pytest.raises(openai.InternalServerError) as failed:
        client.completions.create(
            **{**GOOD, "max_tokens": 20},
            extra_body={"sampler": "explode", "sampler_options": {"after": 3}},
        )
    thread.join()
    assert "failed on purpose" in failed.value.message
    assert results["good"].choices[0].text == alone.choices[0].text
    assert server.health()["status"] == "ok"


def slow(delay: float, max_tokens: int = 100, **extra) -> dict:
    return {
        **GOOD,
        "max_tokens": max_tokens,
        "sampler": "slow",
        "sampler_options": {"delay": delay},
        **extra,
    }


def test_full_queue_503_and_timeouts_504(server, client):
    """Two slow requests fill the batch, two wait; the fifth gets 503 with
    Retry-After; all four run past the timeout: 504, and an error event in a
    stream."""
    outcomes: list = []

    def blocking() -> None:
        outcomes.append(post(server, slow(0.1)))

    def streaming() -> None:
        body = slow(0.1)
        extra = {k: body.pop(k) for k in ("sampler", "sampler_options")}
        try:
            for _ in client.completions.create(**body, stream=True, extra_body=extra):
                pass
        except openai.APIError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=streaming)]
    threads += [threading.Thread(target=blocking) for _ in range(3)]
    start = time.monotonic()
    for thread in threads[:2]:
        thread.start()
    assert wait_until(lambda: server.health()["running"] == 2, 10)
    for thread in threads[2:]:
        thread.start()
    assert wait_until(lambda: server.health()["waiting"] == 2, 10)
    status, headers, body = post(server, GOOD)
    assert status == 503 and body["error"]["code"] == "server_overloaded"
    assert int(headers["retry-after"]) >= 1
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - start < TIMEOUT_S + 10
    [stream_error] = [o for o in outcomes if isinstance(o, openai.APIError)]
    assert "timeout" in stream_error.message
    for outcome in (o for o in outcomes if not isinstance(o, openai.APIError)):
        assert_error(outcome, 504, code="request_timeout")
    assert wait_until(lambda: server.health()["running"] == 0, 5)
    assert client.completions.create(**GOOD).choices[0].text  # still serving


def test_a_client_that_disconnects_frees_its_rows_at_once(server):
    for stream in (True, False):
        sock = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps(slow(0.05, n=2, stream=stream)).encode()
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        received = b""
        while stream and b"data: " not in received:  # it is streaming
            received += sock.recv(4096)
        assert wait_until(lambda: server.health()["running"] == 2, 10)
        sock.close()  # 100 tokens x 0.1 s per step would take 10 s
        start = time.monotonic()
        assert wait_until(lambda: server.health()["running"] == 0, 5)
        assert time.monotonic() - start < 1.0


def test_log_lines_are_json_with_status_tokens_latency(server, client):
    from gptkit.core.tokenizer import encode

    def rows() -> list[dict]:
        return [json.loads(line) for line in server.log().splitlines() if line]

    before = len(rows())
    client.completions.create(**GOOD)
    assert wait_until(lambda: len(rows()) > before, 5)  # logged after the reply
    completions = [r for r in rows() if r.get("path") == "/v1/completions"]
    ok = [r for r in completions if r["status"] == 200]
    assert ok[-1]["prompt_tokens"] == len(encode(GOOD["prompt"]))
    assert ok[-1]["completion_tokens"] == 5
    assert ok[-1]["latency_s"] > 0 and ok[-1]["ttft_s"] is not None
    assert {r["status"] for r in completions} >= {200, 400, 401, 404, 413}


# -- SIGTERM ------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_and_exits_0(server, client):
    """The last test of the module: it stops the server. A request that ends
    within the drain timeout completes; one that would not is cut at it."""
    finished: dict[str, object] = {}

    def stream(name: str, delay: float, max_tokens: int) -> None:
        body = slow(delay, max_tokens=max_tokens)
        extra = {k: body.pop(k) for k in ("sampler", "sampler_options")}
        reason = None
        try:
            for chunk in client.completions.create(
                **body, stream=True, extra_body=extra
            ):
                reason = chunk.choices[0].finish_reason or reason
            finished[name] = reason
        except Exception as exc:  # the connection was cut
            finished[name] = exc

    # a step takes 0.02 + 0.1 s: "short" needs ~1.2 s, "long" ~12 s
    short = threading.Thread(target=stream, args=("short", 0.02, 10))
    long = threading.Thread(target=stream, args=("long", 0.1, 100))
    short.start(), long.start()
    assert wait_until(lambda: server.health()["running"] == 2, 10)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: _refused(server.port), 5)  # no new connections
    assert server.proc.wait(30) == 0
    elapsed = time.monotonic() - start
    short.join(10), long.join(10)
    assert finished["short"] == "length"  # completed during the drain
    assert finished["long"] != "length"  # cut when the drain timed out
    assert DRAIN_S - 0.5 < elapsed < DRAIN_S + 5
    assert "SIGTERM, draining" in server.log()


def _refused(port: int) -> bool:
    try:
        http_request(port, "GET", "/health", timeout=2)
    except OSError:
        return True
    return False
