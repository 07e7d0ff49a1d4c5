"""``/openapi.json`` is generated from the pydantic models, and schemathesis
fuzzes a live server from it (issue 22): no 5xx, every status and body as
described (every error OpenAI's error object, stream events included), the
server healthy and its memory back near its baseline afterwards.

The run is bounded (examples per operation and seconds); ``GPTKIT_FUZZ_SECONDS``
and ``GPTKIT_FUZZ_EXAMPLES`` make it longer (docs/serving-reliability.md
reports a long run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_harness import API_KEY_ENV, MODEL_NAME, ServerProcess, save_tiny_run

pytest.importorskip("uvicorn")
pytest.importorskip("openai")

pytestmark = pytest.mark.slow

KEY = "sk-fuzz-0c7d"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # a run that records a prompt style, so /v1/chat/completions answers too
    run = save_tiny_run(
        tmp_path_factory.mktemp("serve-fuzz") / "run",
        context_length=64,
        prompt_style="alpaca",
    )
    proc = ServerProcess(
        run,
        "--max-batch-size", "4",
        "--request-timeout", "60",
        "--api-key-env", API_KEY_ENV,
        "--log-json",
        env={API_KEY_ENV: KEY},
    )  # fmt: skip
    yield proc
    assert proc.stop() == 0, proc.log()


def test_the_description_is_generated_from_the_request_and_response_models(server):
    from gptkit.serve.schemas import (
        ChatCompletion,
        ChatCompletionRequest,
        Completion,
        CompletionRequest,
        ErrorResponse,
    )

    status, _, spec = server.request("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    schemas = spec["components"]["schemas"]
    request = schemas["CompletionRequest"]
    assert set(request["properties"]) == set(CompletionRequest.model_fields)
    assert request["additionalProperties"] is False
    assert set(schemas["Completion"]["properties"]) == set(Completion.model_fields)
    assert set(schemas["ErrorResponse"]["properties"]) == set(
        ErrorResponse.model_fields
    )
    seed = request["properties"]["seed"]["anyOf"][0]
    assert seed["maximum"] == 2**63 - 1
    responses = spec["paths"]["/v1/completions"]["post"]["responses"]
    assert {"200", "400", "401", "503", "504"} <= set(responses)
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    assert set(schemas["ChatCompletionRequest"]["properties"]) == set(
        ChatCompletionRequest.model_fields
    )
    assert schemas["ChatCompletionRequest"]["additionalProperties"] is False
    assert set(schemas["ChatCompletion"]["properties"]) == set(
        ChatCompletion.model_fields
    )
    assert {"200", "400", "401", "503", "504"} <= set(chat["responses"])
    events = chat["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert "ChatCompletionChunk" in json.dumps(events)
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_schemathesis_finds_no_fault(server, tmp_path):
    schemathesis = shutil.which("schemathesis") or str(
        Path(sys.executable).parent / "schemathesis"
    )
    if not Path(schemathesis).exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    server.request(
        "POST",
        "/v1/completions",
        {"model": MODEL_NAME, "prompt": "warm up", "max_tokens": 4},
        {"Authorization": f"Bearer {KEY}"},
    )
    reply = server.request(
        "POST",
        "/v1/chat/completions",
        {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}],
         "max_tokens": 4},
        {"Authorization": f"Bearer {KEY}"},
    )  # fmt: skip
    assert reply[0] == 200, reply  # the run's prompt style: chat is served
    baseline = server.rss_bytes()
    seconds = os.environ.get("GPTKIT_FUZZ_SECONDS", "45")
    examples = os.environ.get("GPTKIT_FUZZ_EXAMPLES", "30")
    phases = os.environ.get("GPTKIT_FUZZ_PHASES", "examples,coverage,fuzzing")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            schemathesis, "run", f"{server.url}/openapi.json",
            "--checks", ",".join(CHECKS),
            "--phases", phases,
            "--max-examples", examples,
            "--max-time", seconds,
            "--seed", "22",
            "--workers", "2",
            "--header", f"Authorization: Bearer {KEY}",
            "--request-timeout", "60",
            "--report", "json",
            "--report-json-path", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=float(seconds) + 120,
        cwd=tmp_path,  # its cache and reports stay out of the checkout
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    summary = _summary(proc.stdout)
    print(summary)  # the examples tried, for the record (pytest -s)
    # every operation ran, /v1/chat/completions included (the run records a
    # prompt style, so chat requests reach the engine instead of a 400)
    _, _, spec = server.request("GET", "/openapi.json")
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert "/v1/chat/completions" in spec["paths"]
    assert re.search(rf"Tested: {operations}\b", proc.stdout), proc.stdout[-3000:]
    assert server.health()["status"] == "ok"
    assert server.rss_bytes() < baseline + 150 * 2**20
    assert "Traceback" not in server.log()
    for line in server.log().splitlines():
        row = json.loads(line)
        assert row.get("status", 200) < 500 or row["status"] in (503, 504), row


def _summary(stdout: str) -> str:
    lines = [line.strip() for line in stdout.splitlines()]
    keep = [i for i, line in enumerate(lines) if line.startswith("Test cases:")]
    return " ".join(lines[keep[0] : keep[0] + 2]) if keep else stdout[-500:]
