"""The bench report reads each figure's target: met, missed, or not a comparison."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.common import Result
from bench.report import render, target_met


@pytest.mark.parametrize(
    ("value", "unit", "ratio", "target", "met"),
    [
        (310.0, "ms", None, "<= 0.3 s", False),  # units convert
        (290.0, "ms", None, "<= 0.3 s", True),
        (1_500.0, "ms", None, "<= 2,000 ms", True),
        (5.0, "ms", 1.2, "<= 1.10", False),  # no unit: the ratio
        (5.0, "ms", 0.56, ">= 0.5", True),
        (3.0, "slices", None, "< 3", False),  # no ratio: the value
        (5.0, "MB", None, "<= 200 ms", None),  # units that do not compare
        (5.0, "ms", 10.2, "~10 (linear)", None),
        (5.0, "ms", None, "reference", None),
        (5.0, "ms", None, "", None),
        # compound targets: every comparable part must hold
        (357_705.9, "bars/s", 0.472, ">= 200,000 bars/s and ratio >= 0.5", False),
        (357_705.9, "bars/s", 0.574, ">= 200,000 bars/s and ratio >= 0.5", True),
        (36.2, "ms", 1.31, "p50 <= 10 ms, ratio <= 2", False),
        (6.8, "ms", 0.24, "p50 <= 10 ms, ratio <= 2", True),
        (88_524.7, "bars/s", 0.226, ">= 0.5 x raw bulk insert", False),
        (299.0, "ms", 1.47, "<= one round-trip + 100 ms", None),
    ],
)
def test_target_met(value: float, unit: str, ratio: float | None, target: str, met: bool | None) -> None:
    assert target_met(Result("s", "f", value, unit, ratio=ratio, target=target)) is met


def test_render_lists_every_figure_the_machine_and_the_failures() -> None:
    results = [
        Result("a", "fast | thing", 1.0, "ms", baseline=2.0, ratio=0.5, target="<= 1", extra={"n": 3}),
        Result("b", "slow", 9.0, "s", target="<= 1 s"),
    ]
    text = render(
        results,
        suites=["a", "b", "c"],
        failures=[("c", "RuntimeError: boom")],
        started=datetime(2026, 12, 6, 10, tzinfo=UTC),
        load_before="1.00 / 1.00 / 1.00",
        info={"CPU": "test cpu", "Python": "3.11"},
    )
    assert "| CPU | test cpu |" in text and "| date | 2026-12-06 |" in text
    assert "| a | fast \\| thing | 1.000 ms | 2.000 | 0.500 | <= 1 | yes | n=3 |" in text
    assert "| b | slow | 9.000 s |  |  | <= 1 s | **no** |  |" in text
    assert "- `c`: RuntimeError: boom" in text
    assert "1 targets met, 1 missed" in text
