"""Alarm noise on the product's own data: the simulator's devices, without a broker.

The simulator's device models (fieldtools/simulator.py: the same daily crowd, traffic and
parking curves and noisy process values the demo fleet sends) are sampled directly at
each family's firmware interval (``interval_scale`` 1, as the product runs; a larger
scale is cheaper but gives every part judged per reading fewer chances a day), and
every (device, quantity) series goes through the chain the collector would run for it:
its family's (the plug-in's ``detection`` over the ``auto`` defaults,
``collector.statistical.chain_params``).
A preset is ``statistical_params`` as a user would set them; ``GENERIC`` instead runs
the plain ``auto`` defaults (those of ``smartunit backtest`` and NAB) on every series.

- Normal fleet: no anomaly injected; every alert is a false alert. Reported per family
  as false alerts per 1,000 device-days, with the 95 % upper bound of that rate
  (Poisson) and the run time: a rate measured on few device-days says little.
- Injected: each device gets one of its family's value anomalies (a crowd surge at a
  camera, a gas leak in a chemical park, a burst fire-water main) at a random time after
  the warm-up; caught when an alert of that device opens while the anomaly lasts, with
  the time it took.

Usage: bench/detector_fleet.py [--devices N] [--days D] [--injected-days D]
[--interval-scale S]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# run as a script, this folder would come first and shadow the detectors package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.admission import NOT_QUANTITIES
from collector.backtest import SeriesFile, run_chain
from collector.registry import Registry
from collector.statistical import chain_params
from detectors.chain import Chain
from fieldtools.simulator import Anomaly, SimDevice, build_fleet

DAY_S = 86_400.0
START = 1_793_548_800.0  # 2026-11-01 00:00 UTC: any day would do
# what the chain should see (parking has no value anomaly in the simulator)
VALUE_ANOMALIES = {"camera": "crowd_surge", "chem": "gas_leak", "fire": "pressure_drop"}
FAMILIES = ("camera", "parking", "chem", "fire")
GENERIC = "generic"  # the preset that runs the plain auto defaults on every series


@dataclass(frozen=True)
class FleetSeries:
    device: int  # index into the fleet
    family: str
    files: list[SeriesFile]


def sample_fleet(fleet: list[SimDevice], days: float) -> list[FleetSeries]:
    """Every device's readings over ``days``, one series per quantity."""
    out = []
    for index, device in enumerate(fleet):
        times = START + np.arange(0.0, days * DAY_S, device.interval_s)
        columns: dict[str, list[float]] = {}
        kept: list[float] = []
        for t in times:
            reading = device.sample(float(t))
            if reading is None:
                continue
            values = reading.get("readings", reading)
            kept.append(float(t))
            for name, value in values.items():
                if name not in NOT_QUANTITIES and name not in ("ts", "seq"):
                    columns.setdefault(name, []).append(float(value))
        t_kept = np.array(kept)
        files = [
            SeriesFile(Path(f"{device.id}/{name}"), [], t_kept, np.array(values))
            for name, values in columns.items()
        ]
        out.append(FleetSeries(index, device.family, files))
    return out


def poisson_upper_95(count: int) -> float:
    """The 95 % upper confidence bound of a Poisson mean after ``count`` events (exact,
    chi-square: 3.0 for none, 4.74 for one, 6.30 for two)."""

    # the bound m solves P(X <= count | m) = 0.05; bisection on the Poisson CDF
    def cdf(mean: float) -> float:
        term = total = math.exp(-mean)
        for k in range(1, count + 1):
            term *= mean / k
            total += term
        return total

    low, high = float(count), float(count) + 10.0 * math.sqrt(count + 1.0) + 10.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) > 0.05 else (low, middle)
    return high


def _alerts(
    fleet_series: list[FleetSeries], preset: str, params: dict[str, Any]
) -> list[list[np.ndarray]]:
    """Per device, per quantity: the onset times of alerts, each family's series through
    its own chain as the collector builds it from these ``statistical_params``."""
    onsets: dict[int, list[np.ndarray]] = {}
    for family in {s.family for s in fleet_series}:
        mine = [(i, s) for i, s in enumerate(fleet_series) if s.family == family]
        own = params if preset == GENERIC else chain_params(family, "auto", params, {})
        outputs = iter(run_chain([f for _, s in mine for f in s.files], Chain.from_config(**own)))
        for i, s in mine:
            onsets[i] = [f.t[next(outputs).onset] for f in s.files]
    return [onsets[i] for i in range(len(fleet_series))]


def fleet_noise(
    *,
    devices: int = 50,
    days: float = 20.0,
    interval_scale: float = 1.0,
    seed: int = 7,
    presets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """False alerts per 1,000 device-days of the normal fleet, per family and preset
    (chain parameters; the defaults when none are given), with the 95 % upper bound of
    that rate; printed."""
    began = time.monotonic()
    fleet = build_fleet(
        Registry.empty(), generated_per_family=devices, interval_scale=interval_scale, seed=seed
    )
    sampled = sample_fleet(fleet, days)
    device_days = devices * days
    print(
        f"Simulator fleet, normal ({devices} devices x {days:g} days per family = "
        f"{device_days:,.0f} device-days each; readings every {interval_scale:g}x the "
        "firmware interval): false alerts per 1,000 device-days (95 % upper bound)"
    )
    families = FAMILIES
    readings = {
        family: sum(len(f.x) for s in sampled if s.family == family for f in s.files)
        for family in families
    }
    print(
        f"  {'':10s} "
        + " ".join(f"{family + f' ({readings[family] / 1e6:.1f} M)':>18s}" for family in families)
    )
    out = {}
    for name, params in (presets or {"families": {}}).items():
        alerts = _alerts(sampled, name, params)
        rates, bounds = {}, {}
        for family in families:
            mine = [a for s, a in zip(sampled, alerts, strict=True) if s.family == family]
            count = sum(len(times) for per_quantity in mine for times in per_quantity)
            rates[family] = 1000.0 * count / device_days
            bounds[family] = 1000.0 * poisson_upper_95(count) / device_days
        print(
            f"  {name:10s} "
            + " ".join(f"{f'{rates[f]:.1f} (<{bounds[f]:.1f})':>18s}" for f in families)
        )
        print(f"fleet_false_alerts_per_1000_device_days_{name}={max(rates.values()):.1f}")
        print(f"fleet_false_alerts_upper95_per_1000_device_days_{name}={max(bounds.values()):.1f}")
        out[name] = rates
    print(f"  ({time.monotonic() - began:.0f} s)")
    return out


def fleet_injected(
    *,
    devices: int = 50,
    days: float = 8.0,
    interval_scale: float = 1.0,
    seed: int = 11,
    presets: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Share of injected value anomalies caught, with the time to detect, per preset."""
    began = time.monotonic()
    rng = random.Random(seed)
    fleet = [
        d
        for d in build_fleet(
            Registry.empty(), generated_per_family=devices, interval_scale=interval_scale, seed=seed
        )
        if d.family in VALUE_ANOMALIES
    ]
    for device in fleet:  # after three days of warm-up; 10 to 60 minutes long
        start = START + rng.uniform(3.0, days - 1.0) * DAY_S
        device.anomaly = Anomaly(
            VALUE_ANOMALIES[device.family], start, start + rng.uniform(600, 3600)
        )
    sampled = sample_fleet(fleet, days)
    print(
        f"Simulator fleet, one value anomaly per device ({devices} devices x {days:g} days per "
        f"family, 10 to 60 minutes from day 3 on; readings every {interval_scale:g}x the "
        "firmware interval):"
    )
    for name, params in (presets or {"families": {}}).items():
        alerts = _alerts(sampled, name, params)
        for family, kind in VALUE_ANOMALIES.items():
            delays, false = [], 0
            for s, per_quantity in zip(sampled, alerts, strict=True):
                if s.family != family:
                    continue
                anomaly = fleet[s.device].anomaly
                assert anomaly is not None
                times = np.sort(np.concatenate(per_quantity))
                during = times[(times >= anomaly.start) & (times < anomaly.end)]
                false += int(np.sum((times < anomaly.start) | (times >= anomaly.end)))
                if len(during):
                    delays.append(float(during[0] - anomaly.start))
            median = f"{np.median(delays) / 60:.1f} min" if delays else "-"
            print(
                f"  {name:10s} {kind:12s} caught {len(delays)}/{devices} "
                f"({100 * len(delays) / devices:.0f} %), median time to detect {median}; "
                f"{false} alert(s) outside the anomalies"
            )
    print(f"  ({time.monotonic() - began:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50, help="devices per family")
    parser.add_argument("--days", type=float, default=20.0, help="days of the normal fleet")
    parser.add_argument("--injected-days", type=float, default=8.0, help="0: skip")
    parser.add_argument(
        "--interval-scale",
        type=float,
        default=1.0,
        help="multiply every firmware interval (default 1: as the product runs)",
    )
    args = parser.parse_args()
    fleet_noise(devices=args.devices, days=args.days, interval_scale=args.interval_scale)
    if args.injected_days:
        fleet_injected(
            devices=args.devices, days=args.injected_days, interval_scale=args.interval_scale
        )


if __name__ == "__main__":
    main()
