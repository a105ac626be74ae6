"""The detectors' state of some devices, taken out of one engine and put into another.

On the NATS transport each device belongs to one partition, and a partition moves between
collectors (``collector.natsleases``). Its new owner must go on judging the partition's
series where the previous owner stopped, not from a cold start: ``extract`` copies the
state of a set of devices' series out of an engine, ``implant`` writes it into another
engine, whose other series keep theirs.

Every detector keeps its state in ``SeriesState`` tables whose rows are series ids (the
silence watch's rows are device ids), and each engine numbers series in its own order.
So the state travels by name: the (device, family, quantity) of each row, and for each
table the rows it has of those series with their places in that list. A family's chain
numbers its own series (``GroupedChains``): its tables are read and written through the
chain's mapping from the engine's series ids to its own.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any, cast

import numpy as np
import orjson

from collector.detection import DetectionEngine
from collector.rulerunner import RuleRunner
from collector.rules import RuleSpec
from detectors.base import SeriesState
from detectors.chain import GroupedChains

FORMAT = 2
_SILENCE = "silence"
_PLACES = "@places"  # a table's rows: their places in the list of series


def _tables(root: object, path: str, seen: set[int]) -> Iterator[tuple[str, SeriesState]]:
    """Every ``SeriesState`` reachable from a detector, by a path that names it in any
    engine built from the same configuration."""
    if id(root) in seen:
        return
    seen.add(id(root))
    for name, value in sorted(vars(root).items()):
        if isinstance(value, SeriesState):
            yield f"{path}.{name}", value
        elif isinstance(value, dict):
            for key, item in sorted(value.items(), key=lambda kv: str(kv[0])):
                if _is_detector_part(item):
                    yield from _tables(item, f"{path}.{name}[{key}]", seen)
        elif _is_detector_part(value):
            yield from _tables(value, f"{path}.{name}", seen)


def _is_detector_part(value: Any) -> bool:
    return type(value).__module__.startswith("detectors.") and hasattr(value, "__dict__")


def _runners(engine: DetectionEngine, keys: Iterable[str] = ()) -> dict[str, RuleRunner]:
    """The engine's rule runners by key, those of ``keys`` created if not met yet."""
    rules = engine._rules
    wanted = set(keys)
    for spec in engine.rules.rules:
        if id(spec) not in rules._runners and _rule_key(spec) in wanted:
            rules._runner(spec)
    return {runner.key: runner for runner in rules._runners.values()}


def _rule_key(spec: RuleSpec) -> str:
    return RuleRunner(spec, cast(Any, None), cast(Any, None)).key


def _series_tables(engine: DetectionEngine, keys: Iterable[str] = ()) -> dict[str, SeriesState]:
    found: dict[str, SeriesState] = {}
    seen: set[int] = set()
    if engine.chain is not None:
        found |= dict(_tables(engine.chain, "chain", seen))
    for key, runner in _runners(engine, keys).items():
        found |= dict(_tables(runner, key, seen))
    return found


def _table_rows(engine: DetectionEngine, path: str, ids: np.ndarray) -> np.ndarray:
    """Rows of the table at ``path`` for the engine's series ``ids``: -1 where it has none
    (a series of another family's chain, or not numbered)."""
    rows = ids.copy()
    chain = engine.chain
    prefix = "chain.chains["
    if isinstance(chain, GroupedChains) and path.startswith(prefix):
        group = chain._names.index(path[len(prefix) :].split("]", 1)[0])
        rows[:] = -1
        inside = np.flatnonzero((ids >= 0) & (ids < len(chain._group)))
        mine = inside[chain._group[ids[inside]] == group]
        rows[mine] = chain._local[ids[mine]]
    return rows


def extract(engine: DetectionEngine, devices: Iterable[str], *, position: int = 0) -> bytes:
    """The state of the series of ``devices``, noted as belonging to stream position
    ``position``: what ``implant`` takes."""
    table = engine.series
    wanted = {device for device in devices if device in table.devices}
    series = sorted(n for device in wanted for n in table.devices[device][1].values() if n >= 0)
    device_ids = sorted(table.devices[device][0] for device in wanted)
    ids = np.array(series, dtype=np.int64)
    arrays: dict[str, np.ndarray] = {
        "newest": engine._newest[ids[ids < len(engine._newest)]],
    }
    for path, state in _series_tables(engine).items():
        rows = _table_rows(engine, path, ids)
        has = np.flatnonzero((rows >= 0) & (rows < state.count))
        if len(has):
            arrays |= {f"{path}|{k}": v[rows[has]] for k, v in state.arrays.items()}
            arrays[f"{path}|{_PLACES}"] = has
    for key, runner in _runners(engine).items():
        arrays[f"{key}|last_level"] = runner.last_level[ids[ids < len(runner.last_level)]]
    silence = engine.silence._state
    dids = np.array(device_ids, dtype=np.int64)
    rows = dids[dids < silence.count]
    arrays |= {f"{_SILENCE}|{k}": v[rows] for k, v in silence.arrays.items()}
    meta = {
        "format": FORMAT,
        "position": position,
        "series": [table.info[n] for n in series],
        "devices": [table.device_names[n] for n in device_ids],
    }
    arrays["meta"] = np.array(orjson.dumps(meta).decode())
    return _npz(arrays)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` at zlib level 1 instead of 6: every owned partition is
    written every ``nats.checkpoint_interval_s``, and level 6 spent twice the CPU of
    level 1 on the compression for 4 % less size. ``np.load`` reads either."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return out.getvalue()


def implant(engine: DetectionEngine, data: bytes) -> tuple[int, int]:
    """Write what ``extract`` took into ``engine``; the series restored and the stream
    position. Series the engine cannot take (over ``max_series``) are left out."""
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    meta = orjson.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT:
        raise ValueError(f"partition state format {meta.get('format')}")
    table = engine.series
    ids = np.array(
        [engine.series_of(device, family, quantity) for device, family, quantity in meta["series"]],
        dtype=np.int64,
    )
    dids = np.array([table.device(device)[0] for device in meta["devices"]], dtype=np.int64)
    if len(engine._newest) < len(table):
        grown = np.full(len(table), -np.inf)
        grown[: len(engine._newest)] = engine._newest
        engine._newest = grown
    _put(engine._newest, ids, arrays.pop("newest"))
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, value in arrays.items():
        path, _, key = name.rpartition("|")
        groups.setdefault(path, {})[key] = value
    silence = groups.pop(_SILENCE, {})
    if silence:
        _put_table(engine.silence._state, dids, silence)
    runner_keys = {path for path in groups if path.startswith("rule:") and "." not in path}
    tables = _series_tables(engine, runner_keys)
    runners = _runners(engine)
    for path, values in groups.items():
        if path in runners:
            runner = runners[path]
            needed = int(ids.max()) + 1 if len(ids) else 0
            if len(runner.last_level) < needed:
                grown_levels = np.zeros(needed, dtype=np.int64)
                grown_levels[: len(runner.last_level)] = runner.last_level
                runner.last_level = grown_levels
            _put(runner.last_level, ids, values["last_level"].astype(np.int64))
        elif path in tables and _PLACES in values:
            places = values.pop(_PLACES)
            _put_table(tables[path], _table_rows(engine, path, ids)[places], values)
        # else: a detector this engine does not run (another configuration): left out
    return int((ids >= 0).sum()), int(meta.get("position", 0))


def _put(target: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """Rows of the first ``len(rows)`` of ``ids``, those the engine numbered."""
    at = ids[: len(rows)]
    known = at >= 0
    target[at[known]] = rows[known]


def _put_table(state: SeriesState, ids: np.ndarray, values: dict[str, np.ndarray]) -> None:
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1 or set(values) != set(state.fields):
        return  # another detector's table: left out rather than half restored
    at = ids[: lengths.pop()]
    known = at >= 0
    if not known.any():
        return
    state.grow(int(at[known].max()) + 1)
    for key, rows in values.items():
        state.arrays[key][at[known]] = rows[known]


def forget(engine: DetectionEngine, devices: Iterable[str]) -> None:
    """Stop watching the devices' silence: another instance reads them now, and their
    readings no longer come here."""
    table, silence = engine.silence._state, engine.series.devices
    ids = np.array([silence[device][0] for device in devices if device in silence], dtype=np.int64)
    ids = ids[ids < table.count]
    for key, initial in table.fields.items():
        table.arrays[key][ids] = initial
