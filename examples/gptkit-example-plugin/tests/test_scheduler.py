"""The inverse-sqrt scheduler: gptkit's contract and the schedule's values."""

from __future__ import annotations

import math

import pytest

from gptkit.testing import check_scheduler


@pytest.mark.parametrize("options", [{}, {"warmup_steps": 0}, {"min_lr": 1e-5}])
def test_keeps_the_scheduler_contract(registry, options):
    check_scheduler(registry.schedulers.create("inverse-sqrt", **options))


def test_warms_up_to_the_peak_then_decays_as_one_over_sqrt(registry):
    s = registry.schedulers.create("inverse-sqrt", warmup_steps=4)
    lrs = [s.lr_at(step, 100, 1.0) for step in range(16)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warmup
    assert lrs[15] == pytest.approx(math.sqrt(4 / 16))  # step n=16: sqrt(w/n)
    assert max(lrs) == lrs[3]


def test_without_warmup_and_with_a_floor(registry):
    s = registry.schedulers.create("inverse-sqrt", warmup_steps=0, min_lr=0.3)
    assert s.lr_at(0, 10, 1.0) == 1.0
    assert s.lr_at(3, 10, 1.0) == pytest.approx(0.5)
    assert s.lr_at(99, 10, 1.0) == 0.3
