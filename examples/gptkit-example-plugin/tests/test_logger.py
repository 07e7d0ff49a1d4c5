"""The markdown logger: gptkit's logger contract (including a resumed run) and
what the report says."""

from __future__ import annotations

from gptkit.testing import check_logger


def test_keeps_the_logger_contract_and_resumes_cleanly(registry, gptkit_run_dir):
    files = check_logger(registry.loggers.create("markdown"), gptkit_run_dir, steps=6)
    assert files == [gptkit_run_dir / "report.md"]
    report = files[0].read_text(encoding="utf-8")
    # Evaluations every 2 steps; the run was resumed at step 3, so step 4 was
    # logged twice and must appear once.
    cells = [
        line.split("|")[1].strip()
        for line in report.splitlines()
        if line.startswith("| ")
    ]
    steps = [c for c in cells if c.isdigit()]
    assert steps == ["0", "2", "4"]
    assert report.count("### Epoch") == 2  # samples after steps 2 and 5
    assert "- status: completed after 6 steps" in report


def test_report_round_trips_samples_with_backticks():
    from gptkit_example.logger import _fence, parse_report

    text = "code: ```x``` and ````y````"
    fence = _fence(text)
    report = f"### Epoch 1, step 9\n{fence}text\n{text}\n{fence}\n"
    assert parse_report(report) == ([], [{"epoch": 1, "step": 9, "text": text}])
