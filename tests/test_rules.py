"""Rule detectors on hand-made series: the contract operators rely on."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import Detector
from detectors.levels import COLOURS
from detectors.rules.capacity import CapacityRule
from detectors.rules.flatline import FlatlineRule
from detectors.rules.out_of_range import OutOfRangeRule
from detectors.rules.rate import RateRule
from detectors.rules.threshold import ThresholdRule


def run(rule: Detector, values: list[float], step_s: float = 10.0):
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


def test_rate_catches_a_fast_rise_below_every_level() -> None:
    # % LEL, one reading every 10 s: steady, then +1 % LEL per reading (6 %/min) from 3 %
    rise = RateRule(levels={"yellow": 3.0, "orange": 5.0}, clear={"yellow": 1.0}, window_s=30)
    steady = [3.0] * 12
    climbing = [3.0 + k for k in range(1, 11)]  # reaches 13 % LEL: no gas level crossed yet
    colours, out = run(rise, steady + climbing + [13.0] * 12)
    assert set(colours[:12]) == {"green"}
    first = colours.index("yellow")
    assert 12 <= first <= 14  # within a few readings of the rise starting
    assert "orange" in colours[12:22]
    assert colours[-1] == "green"  # the trend is over: cleared
    assert int(out.onset.sum()) == 1


def test_rate_ignores_a_single_noisy_step() -> None:
    rise = RateRule(levels={"yellow": 3.0}, window_s=60)
    colours, _ = run(rise, [3.0] * 10 + [3.6] + [3.0] * 10)  # one jump of +0.6 in 10 s
    assert set(colours) == {"green"}


def test_flatline_after_the_duration_and_clears_when_the_value_moves() -> None:
    stuck = FlatlineRule(duration_s=60, tolerance=0.01)
    jitter = [10.0, 10.2, 9.9, 10.3]
    frozen = [10.1] * 9  # 80 s without a change beyond the tolerance
    colours, out = run(stuck, jitter + frozen + [10.5, 10.4])
    assert colours[:10] == ["green"] * 10
    assert colours[10:13] == ["yellow"] * 3
    assert colours[-2:] == ["green", "green"]
    assert int(out.onset.sum()) == 1


def test_out_of_range_flags_impossible_values_only() -> None:
    lel = OutOfRangeRule(minimum=0.0, maximum=100.0)
    colours, _ = run(lel, [0.0, 55.0, 100.0, 140.0, -1.0, 3.0])
    assert colours == ["green", "green", "green", "blue", "blue", "green"]


def test_capacity_ratio_uses_each_sites_capacity() -> None:
    crowd = CapacityRule(
        levels={"yellow": 0.7, "orange": 0.85, "red": 1.0},
        clear={"yellow": 0.6, "orange": 0.8, "red": 0.95},
    )
    crowd.set_context([0, 1], capacity=[800, 3000])  # a checkpoint and a garden
    sid = np.array([0, 1, 0, 1, 0, 1, 2])
    people = np.array([500, 2000, 700, 2600, 820, 3100, 10_000], dtype=np.float64)
    t = 1.7e9 + np.arange(len(sid)) * 10.0
    out = crowd.decider().decide(sid, t, crowd.score(sid, t, people))
    assert [COLOURS[k] for k in out.level] == [
        "green",
        "green",
        "orange",
        "orange",
        "red",
        "red",
        "green",  # no capacity known for series 2: no judgement
    ]


def test_silence_on_device_time_with_allowance_and_late_data() -> None:
    from detectors.rules.silence import SilenceWatch

    watch = SilenceWatch(timeout_s=60, allowance_s=30)
    watch.observe([0, 1], [1000.0, 1000.0])
    assert watch.check(1080).silent.tolist() == []  # 80 s: inside timeout + allowance
    report = watch.check(1100)
    assert report.silent.tolist() == [0, 1]
    assert report.started.tolist() == [0, 1]
    # late data: a backlog with old device times does not make the device look alive ...
    watch.observe([0, 0], [900.0, 950.0])
    assert watch.check(1101).silent.tolist() == [0, 1]
    assert watch.check(1101).started.tolist() == []  # ... and is not reported again
    # ... but fresh readings do
    watch.observe([0], [1095.0])
    report = watch.check(1110)
    assert report.silent.tolist() == [1]
    assert report.recovered.tolist() == [0]


def test_silence_learns_each_series_interval() -> None:
    from detectors.rules.silence import SilenceWatch

    watch = SilenceWatch(interval_multiple=5, minimum_s=10, allowance_s=0)
    fast = np.arange(0, 100, 2.0)  # every 2 s: silent after 10 s (the minimum)
    slow = np.arange(0, 100, 20.0)  # every 20 s: silent after 100 s
    watch.observe(np.r_[np.zeros(len(fast)), np.ones(len(slow))].astype(int), np.r_[fast, slow])
    assert watch.check(98 + 11).silent.tolist() == [0]
    assert watch.check(80 + 101).silent.tolist() == [0, 1]


def test_a_silent_gateway_is_one_alert_not_fifty() -> None:
    from detectors.rules.silence import SilenceWatch

    watch = SilenceWatch(timeout_s=60, allowance_s=0)
    behind_gateway = np.arange(50)
    watch.set_groups(behind_gateway, np.zeros(50))
    watch.set_groups([50], [-1])  # a device with its own connection
    watch.observe(np.arange(51), np.full(51, 1000.0))
    watch.observe(np.arange(51, 151), np.full(100, 1090.0))  # the rest of the fleet
    report = watch.check(1100)  # the gateway's devices and one other went quiet at once
    assert not report.fleet_silent
    assert report.silent_groups.tolist() == [0]
    assert report.groups_started.tolist() == [0]
    assert report.silent.tolist() == [50]  # only the device outside the gateway

    # the gateway is back, but three of its devices are not: those are device problems
    watch.observe(np.arange(3, 50), np.full(47, 1150.0))
    watch.observe(np.arange(51, 151), np.full(100, 1150.0))
    report = watch.check(1160)
    assert report.silent_groups.tolist() == []
    assert report.groups_recovered.tolist() == [0]
    assert report.silent.tolist() == [0, 1, 2, 50]
    assert report.started.tolist() == [0, 1, 2]


def test_a_silent_fleet_is_one_alert_and_what_stays_silent_is_reported_after() -> None:
    from detectors.rules.silence import SilenceWatch

    watch = SilenceWatch(timeout_s=60, allowance_s=0, fleet_share=0.5, fleet_min=20)
    watch.set_groups(np.arange(10), np.zeros(10))  # ten devices behind one gateway
    watch.observe(np.arange(100), np.full(100, 1000.0))
    watch.observe(np.arange(1, 100), np.full(99, 1050.0))
    report = watch.check(1070)  # device 0 stopped first: a device problem, reported
    assert report.started.tolist() == [0] and not report.fleet_silent

    watch.observe(np.arange(70, 100), np.full(30, 1150.0))
    report = watch.check(1160)  # 70 of 100 quiet at once (the gateway too): the network
    assert report.fleet_started and report.fleet_silent and report.quiet == 70
    assert report.started.tolist() == [] and report.groups_started.tolist() == []
    assert report.silent.tolist() == [0] and report.recovered.tolist() == []

    watch.observe(np.arange(40, 100), np.full(60, 1200.0))
    report = watch.check(1210)  # 40 quiet: above half the share, still the fleet's alert
    assert report.fleet_silent and not report.fleet_started and report.started.tolist() == []

    watch.observe(np.arange(3, 100), np.full(97, 1250.0))
    report = watch.check(1260)  # back, but for the gateway's first three devices
    assert report.fleet_recovered and not report.fleet_silent
    assert report.started.tolist() == [1, 2] and report.silent.tolist() == [0, 1, 2]

    restored = SilenceWatch(timeout_s=60, allowance_s=0, fleet_share=0.5, fleet_min=20)
    watch.observe(np.arange(3, 100), np.full(97, 1300.0))
    report = watch.check(1400)  # everything quiet again
    assert report.fleet_started
    restored.restore(watch.state())  # a restart does not raise the fleet's alert again
    report = restored.check(1410)
    assert report.fleet_silent and not report.fleet_started


def test_a_small_fleet_is_never_a_silent_fleet() -> None:
    from detectors.rules.silence import SilenceWatch

    watch = SilenceWatch(timeout_s=60, allowance_s=0, fleet_min=20)
    watch.observe(np.arange(19), np.full(19, 1000.0))
    report = watch.check(1100)
    assert not report.fleet_silent and report.started.tolist() == list(range(19))
