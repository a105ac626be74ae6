"""The default chain's promises: quiet on noise, loud on what is new."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.chain import Chain

DAY = 288  # readings at 5-minute intervals


def quiet_series(seed: int, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + np.sin(np.arange(n) / DAY * 2 * np.pi) * 10 + rng.normal(0, 1, n)


def run(values: np.ndarray) -> np.ndarray:
    n = len(values)
    out = Chain.from_config().process(np.zeros(n, dtype=np.int64), np.arange(n) * 300.0, values)
    return out.onset


def fleet_alerts(make_series, n: int = 4000, count: int = 20) -> int:
    values = np.stack([make_series(seed, n) for seed in range(count)], axis=1).ravel()
    series = np.tile(np.arange(count, dtype=np.int64), n)  # interleaved, as ingest sees them
    t = np.repeat(np.arange(n) * 300.0, count)
    return int(Chain.from_config().process(series, t, values).onset.sum())


def test_noise_raises_little() -> None:
    """Plain noise keeps setting records; the default chain must not alert on most.

    20 series x 2 weeks at 5-minute readings, measured with the defaults: 4 alerts with
    a daily cycle and 4 without (session 1's chain: 1 and 32). ``noise_multiple = 1.0``
    buys an even quieter fleet for NAB points (docs/detectors.md).
    """

    def plain(seed: int, n: int) -> np.ndarray:
        return np.random.default_rng(seed + 100).normal(50, 3, n)

    assert fleet_alerts(quiet_series) <= 6
    assert fleet_alerts(plain) <= 6


def test_a_sustained_shift_inside_the_noise_stays_active_while_it_lasts() -> None:
    """A valve half-closed: flow 3 sigma lower for 300 readings.

    The range part sees the first new lows, then the range has absorbed them; the shift
    part keeps the alert active while the flow stays low (what SKAB's FAR and MAR count).
    """
    rng = np.random.default_rng(5)
    n = 1200
    values = 32 + rng.normal(0, 0.45, n)
    values[600:900] -= 1.4
    out = Chain.from_config().process(np.zeros(n, dtype=np.int64), np.arange(n) * 1.0, values)
    assert not out.active[:600].any()
    assert 600 <= np.flatnonzero(out.onset)[0] < 650
    assert out.active[600:900].mean() > 0.6  # active while shifted, not only at its onset
    # and it clears once the flow is back (its smoothed level needs ~ a span to follow)
    assert not out.active[1000:].any()


@pytest.mark.slow
def test_spike_level_shift_and_drift_are_caught() -> None:
    spike = quiet_series(1)
    spike[3000] += 40
    shift = quiet_series(2)
    shift[3000:] += 15  # inside the old range at the daily peak, but sustained
    for values in (spike, shift):
        onsets = np.flatnonzero(run(values))
        assert len(onsets) >= 1
        assert 3000 <= onsets[0] < 3000 + DAY // 2


def test_nothing_is_raised_during_warm_up() -> None:
    values = quiet_series(3)
    values[100] += 1000  # before a day of data: the range means nothing yet
    assert not run(values)[:DAY].any()
