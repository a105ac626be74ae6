"""A local disk spool: where readings wait, durably, while InfluxDB is down or slow.

The collector acknowledges an MQTT message only once its readings are handed off
durably: written to InfluxDB, or appended here (written and fsync'ed). Batches are
replayed to InfluxDB in the order they were spooled once it answers again; what was
replayed is remembered in a cursor file, so a crash replays at most the batch in
flight, which InfluxDB collapses (same series and timestamp: same point).

Layout: ``<dir>/<number>.seg`` segment files of records ``<length>\\n<lines>\\n`` and a
``cursor`` file ``<segment number> <offset>``, replaced atomically.

Bounded by ``max_bytes``. Overflow policy: a batch that does not fit is refused
(``SpoolFull``) and the collector does not acknowledge its messages, so they stay
queued with the broker (whose own queue is bounded by ``max_queued_bytes``); nothing is
dropped, the backlog moves upstream. ``fill_ratio`` feeds the operator alert raised
when the spool is nearly full.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from collector.errors import SmartUnitError

SEGMENT_SUFFIX = ".seg"


class SpoolFull(SmartUnitError):
    """The spool has no room for this batch; leave its messages with the broker."""


class DiskSpool:
    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 * 1024 * 1024
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be > 0")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor_path = directory / "cursor"
        self._peeked: tuple[int, int] | None = None  # (segment, end) of the batch peek gave
        self._segment, self._offset = self._read_cursor()
        self._drop_consumed_segments()
        self._repair_tail()
        self._size = self._pending_bytes()

    # -- state -----------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(
            int(p.stem) for p in self.directory.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit()
        )

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{SEGMENT_SUFFIX}"

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = self._cursor_path.read_text().split()
            return int(segment), int(offset)
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return (segments[0] if segments else 0), 0

    def _write_cursor(self) -> None:
        temporary = self._cursor_path.with_suffix(".tmp")
        temporary.write_text(f"{self._segment} {self._offset}\n")
        os.replace(temporary, self._cursor_path)

    def _drop_consumed_segments(self) -> None:
        for number in self._segments():
            if number < self._segment:
                self._path(number).unlink(missing_ok=True)

    def _repair_tail(self) -> None:
        """Cut a record torn by a crash off the last segment: it was never acknowledged."""
        segments = self._segments()
        if not segments:
            return
        last = segments[-1]
        valid = self._offset if last == self._segment else 0
        for number, _, _, end in self._records():
            if number == last:
                valid = end
        if self._path(last).stat().st_size > valid:
            with self._path(last).open("r+b") as handle:
                handle.truncate(valid)

    def _pending_bytes(self) -> int:
        total = 0
        for number in self._segments():
            size = self._path(number).stat().st_size
            total += size - self._offset if number == self._segment else size
        return max(total, 0)

    @property
    def pending_bytes(self) -> int:
        return self._size

    @property
    def fill_ratio(self) -> float:
        return self._size / self.max_bytes

    def __bool__(self) -> bool:
        return self._size > 0

    # -- append and replay -----------------------------------------------------------------

    def append(self, lines: list[str]) -> None:
        """Store one batch durably (fsync) or raise ``SpoolFull``."""
        data = "\n".join(lines).encode()
        record = f"{len(data)}\n".encode() + data + b"\n"
        if self._size + len(record) > self.max_bytes:
            raise SpoolFull(
                f"spool full ({self._size} of {self.max_bytes} bytes): "
                "messages stay with the broker"
            )
        segments = self._segments()
        number = segments[-1] if segments else self._segment
        path = self._path(number)
        if path.exists() and path.stat().st_size + len(record) > self.segment_bytes:
            number += 1
            path = self._path(number)
        with path.open("ab") as handle:
            handle.write(record)
            handle.flush()
            os.fsync(handle.fileno())
        self._size += len(record)

    def peek(self) -> list[str] | None:
        """The oldest batch not yet replayed, or None when the spool is empty."""
        for number, _, lines, end in self._records():
            self._peeked = (number, end)
            return lines
        self._peeked = None
        return None

    def pop(self) -> None:
        """Forget the batch ``peek`` returned: it is in InfluxDB now."""
        if self._peeked is None and self.peek() is None:
            return
        assert self._peeked is not None
        (number, end), self._peeked = self._peeked, None
        for older in self._segments():
            if older < number:
                self._path(older).unlink(missing_ok=True)
        self._segment, self._offset = number, end
        if end >= self._path(number).stat().st_size and number != self._segments()[-1]:
            self._path(number).unlink(missing_ok=True)
            self._segment, self._offset = number + 1, 0
        self._write_cursor()
        self._size = self._pending_bytes()

    def _records(self) -> Iterator[tuple[int, int, list[str], int]]:
        """(segment, offset, lines, end offset) from the cursor on."""
        for number in self._segments():
            if number < self._segment:
                continue
            offset = self._offset if number == self._segment else 0
            with self._path(number).open("rb") as handle:
                handle.seek(offset)
                while True:
                    header = handle.readline()
                    if not header.endswith(b"\n"):
                        break  # end of segment (or a torn last write: never acknowledged)
                    try:
                        length = int(header)
                    except ValueError:
                        break  # torn: see above
                    data = handle.read(length + 1)
                    if len(data) < length + 1:
                        break
                    yield number, offset, data[:length].decode().split("\n"), handle.tell()
                    offset = handle.tell()
