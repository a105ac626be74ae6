"""Rule detectors on hand-made series: the contract operators rely on."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.levels import COLOURS
from detectors.rules.threshold import ThresholdRule


def run(rule: ThresholdRule, values: list[float], step_s: float = 10.0):
    x = np.array(values, dtype=np.float64)
    sid = np.zeros(len(x), dtype=np.int64)
    t = 1.7e9 + np.arange(len(x)) * step_s
    out = rule.decider().decide(sid, t, rule.score(sid, t, x))
    return [COLOURS[k] for k in out.level], out


def gas_rule(for_s: float = 0.0) -> ThresholdRule:
    # GB/T 50493-2019 combustible gas: level 1 at 25 % LEL, level 2 at 50 % LEL
    return ThresholdRule(
        levels={"orange": 25, "red": 50}, clear={"orange": 20, "red": 45}, for_s=for_s
    )


def test_levels_rise_and_fall_within_one_warning() -> None:
    colours, out = run(gas_rule(), [5, 24.9, 25, 30, 50, 60, 46, 44, 30, 21, 19.9, 10])
    assert colours == [
        "green",
        "green",
        "orange",
        "orange",
        "red",
        "red",
        "red",
        "orange",
        "orange",
        "orange",
        "green",
        "green",
    ]
    assert out.onset.tolist().count(True) == 1 and out.onset[2]
    assert out.cleared.tolist().count(True) == 1 and out.cleared[10]


def test_hysteresis_stops_flapping_on_the_line() -> None:
    hovering = [26, 24, 26, 24, 25.5, 23, 26, 22, 24]  # around 25, never below 20
    colours, out = run(gas_rule(), hovering)
    assert set(colours) == {"orange"}
    assert int(out.onset.sum()) == 1
    assert not out.cleared.any()


def test_minimum_duration_before_raising() -> None:
    # 10 s between readings; orange only once the value has stayed >= 25 for 30 s
    colours, _ = run(gas_rule(for_s=30), [10, 26, 27, 28, 29, 30, 10])
    assert colours == ["green", "green", "green", "green", "orange", "orange", "green"]
    # a brief excursion never raises anything
    colours, out = run(gas_rule(for_s=30), [10, 40, 41, 10, 40, 10, 10])
    assert set(colours) == {"green"}
    assert not out.onset.any()


def test_low_side_thresholds() -> None:
    tank = ThresholdRule(
        levels={"yellow": 20, "red": 10}, clear={"yellow": 25, "red": 12}, direction="below"
    )
    colours, _ = run(tank, [50, 21, 19, 9, 11, 13, 24, 26])
    assert colours == ["green", "green", "yellow", "red", "red", "yellow", "yellow", "green"]


def test_each_series_keeps_its_own_level() -> None:
    rule = gas_rule()
    sid = np.array([0, 1, 0, 1, 0, 1])
    x = np.array([30, 10, 22, 60, 19, 46], dtype=np.float64)
    t = np.repeat(1.7e9 + np.arange(3) * 10.0, 2)
    out = rule.decider().decide(sid, t, rule.score(sid, t, x))
    assert [COLOURS[k] for k in out.level] == ["orange", "green", "orange", "red", "green", "red"]


@pytest.mark.parametrize(
    ("levels", "clear", "message"),
    [
        ({"orange": 50, "red": 25}, None, "higher threshold"),
        ({"orange": 25}, {"orange": 30}, "clear below"),
        ({"orange": 25}, {"red": 20}, "no threshold"),
        ({"green": 1}, None, "green"),
        ({"purple": 1}, None, "unknown colour"),
    ],
)
def test_bad_rules_are_refused(levels, clear, message) -> None:
    with pytest.raises(ValueError, match=message):
        ThresholdRule(levels=levels, clear=clear)
