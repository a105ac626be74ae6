"""Context: the wrong value for the time of day, a rhythm that breaks, and calibration
that makes one threshold mean the same rarity on every series."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.auto import QUIET
from detectors.chain import Chain
from detectors.cycle import CycleProfile
from detectors.likelihood import Likelihood, log_gaussian_tail
from detectors.sequence import SequenceContext

DAY = 288  # readings at 5-minute intervals


def daily_peaks(days: int, seed: int, missing_day: int | None = None) -> np.ndarray:
    """A busy hour every afternoon on a quiet base, as a demand or crowd series shows."""
    rng = np.random.default_rng(seed)
    hour = (np.arange(days * DAY) % DAY) / 12.0
    peak = 40.0 * np.exp(-(((hour - 15.0) / 1.5) ** 2))
    values = 10.0 + peak + rng.normal(0, 1.0, len(hour))
    if missing_day is not None:
        day = slice(missing_day * DAY, (missing_day + 1) * DAY)
        values[day] -= peak[day]  # the peak does not come
    return values


def onsets(values: np.ndarray, **params: object) -> np.ndarray:
    n = len(values)
    chain = Chain.from_config(**params)  # type: ignore[arg-type]
    return chain.process(np.zeros(n, dtype=np.int64), 1.7e9 + np.arange(n) * 300.0, values).onset


@pytest.mark.slow
def test_a_daily_peak_that_does_not_come_is_caught() -> None:
    """Every value of the missing peak lies inside the range the series has shown: only
    what this hour usually looks like gives it away."""
    values = daily_peaks(12, seed=1, missing_day=10)
    alerts = np.flatnonzero(onsets(values))
    assert len(alerts) >= 1
    assert 10 * DAY <= alerts[0] < 11 * DAY
    without = np.flatnonzero(onsets(values, parts=("raw", "smooth", "shift")))
    assert not ((without >= 10 * DAY) & (without < 11 * DAY)).any()
    assert not onsets(daily_peaks(12, seed=1)).any()  # and nothing on the normal days


def test_the_cycle_part_stays_out_of_series_without_a_cycle() -> None:
    rng = np.random.default_rng(3)
    n = 12 * DAY
    scores = CycleProfile().score(
        np.zeros(n, dtype=np.int64), np.arange(n) * 300.0, rng.normal(0, 1, n)
    )
    assert scores.max() == 0.0  # no day or week profile explains noise: never used


def test_a_broken_rhythm_inside_the_range_is_caught_by_sequence_context() -> None:
    """A machine cycle of twelve steps, repeated; then the steps come in another order.
    No value is new, so only the order betrays it."""
    rng = np.random.default_rng(5)
    cycle = np.array([0, 1, 2, 4, 7, 9, 10, 9, 7, 4, 2, 1], dtype=np.float64)
    values = np.tile(cycle, 400) + rng.normal(0, 0.05, 4800)
    values[4000:4120] = np.tile(cycle[::-1].copy()[[0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]], 10)
    n = len(values)
    scores = SequenceContext().score(np.zeros(n, dtype=np.int64), np.arange(n) * 60.0, values)
    assert scores[:4000].max() < 0.5
    assert scores[4000:4120].max() >= 0.5


def test_one_threshold_means_the_same_rarity_on_any_scale() -> None:
    """Calibrated scores depend on how unusual a raw score is for its own series, not on
    its size: two series whose raw scores differ by scale and offset score alike."""
    rng = np.random.default_rng(7)
    raw = rng.uniform(0.0, 0.2, 3000)
    raw[2500:2520] = 0.9  # a burst of surprise
    first, second = Likelihood(floor=1e-6), Likelihood(floor=1e-6)
    first.grow(1)
    second.grow(1)
    ids = np.zeros(1, dtype=np.int64)
    a = np.array([first.calibrate(ids, raw[i : i + 1])[0] for i in range(len(raw))])
    b = np.array([second.calibrate(ids, 0.1 + 0.5 * raw[i : i + 1])[0] for i in range(len(raw))])
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert a[:2500].max() < 0.5 <= a[2500:2520].max()
    # 0.5 is the rarity p_alert (1e-4 by default): a Gaussian tail beyond z = 3.719
    assert abs(float(np.exp(log_gaussian_tail(np.array([3.719]))[0])) - 1e-4) < 1e-6


def random_walks(count: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(60 + np.cumsum(rng.normal(0, 0.3, (n, count)), axis=0), 5, 95)


@pytest.mark.slow
def test_the_quiet_setting_lets_a_wandering_level_be_and_still_sees_a_jump() -> None:
    """A tank level wanders and keeps setting new extremes; each is as rare as the series
    makes them, so the quiet setting (a range break rarer than once in 100,000 readings
    of its series) stays silent, while a jump of many steps still alerts."""
    n, count = 10_000, 5
    levels = random_walks(count, n, seed=11)
    series = np.tile(np.arange(count, dtype=np.int64), n)
    t = np.repeat(np.arange(n) * 60.0, count)
    quiet = Chain.from_config(**QUIET).process(series, t, levels.ravel()).onset
    loud = Chain.from_config().process(series, t, levels.ravel()).onset
    assert quiet.sum() == 0
    assert loud.sum() > 5 * count  # what the default sensitivity raises on the same data
    jumped = levels.copy()
    jumped[8_000, 3] = levels[:8_000, 3].max() + 20.0  # a spike far beyond everything shown
    out = Chain.from_config(**QUIET).process(series, t, jumped.ravel()).onset.reshape(n, count)
    assert out[8_000, 3]


def test_a_surge_does_not_teach_the_profile_that_tomorrow_is_wrong() -> None:
    """An hour-long crowd surge is caught; the next day's ordinary afternoon is not an
    alert, although the surge's visit was folded into its bins."""
    values = daily_peaks(12, seed=2)
    hour = (np.arange(len(values)) % DAY) / 12.0
    surge = (np.arange(len(values)) // DAY == 8) & (hour >= 15.0) & (hour < 16.0)
    values[surge] += 100.0
    alerts = np.flatnonzero(onsets(values, parts=("cycle",)))
    assert ((alerts >= 8 * DAY) & (alerts < 9 * DAY)).any()
    assert not (alerts >= 9 * DAY).any()
