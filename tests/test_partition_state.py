"""The detectors' state of some devices moves from one engine to another
(collector/partitionstate.py): the series go on as if judged by one engine."""

from __future__ import annotations

import numpy as np

from collector.detection import DetectionEngine
from collector.partitionstate import extract, implant
from collector.protocol import Reading
from collector.registry import Registry
from collector.rules import RuleBook
from tests.test_detection_e2e import PRESETS


def engine() -> DetectionEngine:
    return DetectionEngine(RuleBook.load([PRESETS]))


def readings(devices: list[str], start: int, count: int, value: float) -> list[Reading]:
    return [
        Reading("chem", device, 1_700_000_000_000 + i * 1000, {"lel_pct": value + i % 3})
        for i in range(start, start + count)
        for device in devices
    ]


def test_a_devices_state_moves_to_another_engine_and_its_other_series_stay() -> None:
    registry = Registry.empty()
    first, second = engine(), engine()
    first.process(readings(["gas-1", "gas-2"], 0, 200, 2.0), registry)
    second.process(readings(["gas-3", "gas-2"], 0, 50, 9.0), registry)
    state_of_three = second.snapshot()
    rows_of_three = {
        key: value[0] for key, value in state_of_three.items() if key.startswith("chain|chem/")
    }

    series, position = implant(second, extract(first, ["gas-1", "gas-2"], position=77))
    assert (series, position) == (2, 77)
    # a leak after the move: both engines decide the same, as one engine would
    leak = readings(["gas-1"], 200, 10, 60.0)
    decided = [(e.detector, e.colour) for e in first.process(leak, registry)]
    assert decided and decided == [(e.detector, e.colour) for e in second.process(leak, registry)]
    in_first, in_second = first.snapshot(), second.snapshot()
    one, two = (e.series.devices["gas-1"][1]["lel_pct"] for e in (first, second))
    for key, value in in_first.items():
        # the gas readings are all chem: the other families' chains hold no rows
        if (key != "meta" and not key.startswith(("silence|", "chain|"))) or key.startswith(
            "chain|chem/"
        ):
            assert np.array_equal(value[one], in_second[key][two], equal_nan=True), key
    # the other engine's own series kept its state
    mine = second.series.devices["gas-3"][1]["lel_pct"]
    for key, row in rows_of_three.items():
        assert np.array_equal(in_second[key][mine], row, equal_nan=True), key
    # what gas-2 judged before the move is not judged again
    late = second.late_readings
    second.process(readings(["gas-2"], 150, 10, 2.0), registry)
    assert second.late_readings == late + 10
