"""A local disk spool: where readings wait, durably, while InfluxDB is down or slow.

The collector acknowledges an MQTT message only once its readings are handed off
durably: written to InfluxDB, or appended here (written and fsync'ed). Batches are
replayed to InfluxDB in the order they were spooled once it answers again; what was
replayed is remembered in a cursor file, so a crash replays at most the batch in
flight, which InfluxDB collapses (same series and timestamp: same point).

Layout: ``<dir>/<number>.seg`` segment files of records, and a ``cursor`` file
``<segment number> <offset>``, replaced atomically. A record is a 16-byte header and a
payload, the batch's lines joined by ``\\n`` in UTF-8::

    magic  b"\\xf5SU1"   (0xF5 never occurs in UTF-8, so never inside a payload)
    length uint32 LE     payload bytes
    crc    uint32 LE     CRC32C of the payload
    hcrc   uint32 LE     CRC32C of the 12 bytes before it (a flipped length is caught
                         before it is trusted)

Appends are all-or-nothing: the segment's size is remembered, the record written and
fsync'ed, and on any error the segment is cut back to that size (and fsync'ed) and
``SpoolWriteFailed`` raised, so the batch is not acknowledged and stays with the broker.
A file that cannot be cut back is left to the reader, and the next record goes to a new
segment. A new segment's directory entry is fsync'ed before anything in it counts as
durable.

Reading, like a write-ahead-log reader: a record whose magic, header CRC or payload CRC
does not hold is damage. The reader scans forward for the next position where a whole
record checks out and goes on from there; the damaged bytes are skipped, counted
(``corrupt_records``, ``corrupt_bytes``) and logged once with segment and offset, and
the cursor moves past them. Segments of any other format read as damage, never as a
crash. At opening, a record torn by a crash at the very end of the last segment (the
file ends inside it) is cut off: its append never returned, so nothing in it was
acknowledged.

Bounded by ``max_bytes``. Overflow policy: a batch that does not fit is refused
(``SpoolFull``) and the collector does not acknowledge its messages, so they stay
queued with the broker (whose own queue is bounded by ``max_queued_bytes``); nothing is
dropped, the backlog moves upstream. The same holds when the disk itself is full
(``SpoolWriteFailed``, ``disk_full``): ``check_disk_full`` stays true until an append
succeeds or the filesystem has room for the refused record twice over (so that the
alert does not flap while the disk hovers at full).
``fill_ratio`` feeds the operator alert raised when the spool is nearly full.

One thread only: the collector appends and replays from its event loop.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from pathlib import Path

from google_crc32c import value as crc32c

from collector.errors import SpoolFull, SpoolWriteFailed

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
MAGIC = b"\xf5SU1"
HEADER = struct.Struct("<4sIII")
HEADER_CHECKED = 12  # bytes of the header its own CRC covers
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_TORN = -1  # the data ends inside a record
_BAD = -2  # not a record


def encode_record(payload: bytes) -> bytes:
    head = MAGIC + struct.pack("<II", len(payload), crc32c(payload))
    return head + struct.pack("<I", crc32c(head)) + payload


def _header(data: bytes, at: int) -> tuple[int, int] | None:
    """(payload length, payload CRC) of a header at ``at`` that checks out, else None."""
    if len(data) - at < HEADER.size:
        return None
    magic, length, payload_crc, header_crc = HEADER.unpack_from(data, at)
    if magic != MAGIC or crc32c(data[at : at + HEADER_CHECKED]) != header_crc:
        return None
    return length, payload_crc


def _record_end(data: bytes, at: int) -> int:
    """Where the record at ``at`` ends if it checks out; ``_TORN`` or ``_BAD`` if not."""
    header = _header(data, at)
    if header is None:
        seen = min(len(data) - at, len(MAGIC))
        torn = len(data) - at < HEADER.size and data[at : at + seen] == MAGIC[:seen]
        return _TORN if torn else _BAD
    length, payload_crc = header
    end = at + HEADER.size + length
    if end > len(data):
        return _TORN
    if crc32c(data[at + HEADER.size : end]) != payload_crc:
        return _BAD
    return end


def _next_record(data: bytes, after: int) -> int:
    """The first position past ``after`` where a whole record checks out, or the end."""
    candidate = data.find(MAGIC, after + 1)
    while candidate != -1:
        if _record_end(data, candidate) >= 0:
            return candidate
        candidate = data.find(MAGIC, candidate + 1)
    return len(data)


def _decode(payload: bytes) -> list[str] | None:
    try:
        return payload.decode().split("\n")
    except UnicodeDecodeError:  # framed and checksummed, yet not ours: damage
        return None


class DiskSpool:
    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 * 1024 * 1024
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be > 0")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.corrupt_records = 0
        self.corrupt_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._cursor_path = directory / "cursor"
        self._cursor_saved = True
        self._peeked: tuple[int, int] | None = None  # (segment, end) of the batch peek gave
        self._new_segment = False  # the last segment ends in damage: append past it
        self._refused_bytes = 0  # the record a full disk refused, while it stays full
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
            return int(segment), max(int(offset), 0)
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            segments = self._segments()
            return (segments[0] if segments else 0), 0

    def _write_cursor(self) -> None:
        """Best effort: a cursor left behind only replays batches again, which collapse."""
        temporary = self._cursor_path.with_suffix(".tmp")
        try:
            temporary.write_text(f"{self._segment} {self._offset}\n")
            os.replace(temporary, self._cursor_path)
        except OSError as exc:
            if self._cursor_saved:
                log.error("cannot save the spool cursor; replay goes on: %s", exc)
            self._cursor_saved = False
            return
        if not self._cursor_saved:
            log.info("spool cursor saved again")
        self._cursor_saved = True

    def _drop_consumed_segments(self) -> None:
        for number in self._segments():
            if number < self._segment:
                self._path(number).unlink(missing_ok=True)

    def _repair_tail(self) -> None:
        """Cut a record torn by a crash off the last segment: it was never acknowledged.

        Damage anywhere else is left for the reader to skip, count and report.
        """
        segments = self._segments()
        if not segments:
            return
        last = segments[-1]
        start = self._offset if last == self._segment else 0
        with self._path(last).open("rb") as handle:
            handle.seek(start)
            data = handle.read()
        at = 0
        while at < len(data):
            end = _record_end(data, at)
            if end >= 0:
                at = end
                continue
            resume = _next_record(data, at)
            if resume < len(data):
                at = resume
                continue
            if end == _TORN:
                log.warning(
                    "cutting a record torn by a crash off the spool; it was never acknowledged",
                    extra={"segment": last, "offset": start + at, "bytes": len(data) - at},
                )
                with self._path(last).open("r+b") as handle:
                    handle.truncate(start + at)
                    os.fsync(handle.fileno())
            else:
                self._new_segment = True
            return

    def _pending_bytes(self) -> int:
        total = 0
        for number in self._segments():
            if number < self._segment:
                continue
            size = self._path(number).stat().st_size
            total += max(size - self._offset, 0) if number == self._segment else size
        return total

    @property
    def pending_bytes(self) -> int:
        return self._size

    @property
    def fill_ratio(self) -> float:
        return self._size / self.max_bytes

    def __bool__(self) -> bool:
        return self._size > 0

    def check_disk_full(self) -> bool:
        """Whether the disk refused an append and has not had room for it since."""
        if self._refused_bytes:
            try:
                stat = os.statvfs(self.directory)
            except OSError:  # cannot tell: it stays full until an append succeeds
                return True
            if stat.f_bavail * stat.f_frsize >= 2 * self._refused_bytes:
                log.info("the spool's disk has room again", extra={"dir": str(self.directory)})
                self._refused_bytes = 0
        return self._refused_bytes > 0

    # -- append ----------------------------------------------------------------------------

    def append(self, lines: list[str]) -> None:
        """Store one batch durably (fsync), or raise a ``SpoolError`` having stored nothing."""
        record = encode_record("\n".join(lines).encode())
        if self._size + len(record) > self.max_bytes:
            raise SpoolFull(
                f"spool full ({self._size} of {self.max_bytes} bytes): "
                "messages stay with the broker"
            )
        segments = self._segments()
        number = segments[-1] if segments else self._segment
        path = self._path(number)
        if self._new_segment or (
            path.exists() and path.stat().st_size + len(record) > self.segment_bytes
        ):
            number += 1
            path = self._path(number)
        try:
            self._write_record(path, record)
        except OSError as exc:
            disk_full = exc.errno in DISK_FULL_ERRNOS
            if disk_full and not self._refused_bytes:
                log.error(
                    "the spool's disk is full: batches stay with the broker",
                    extra={"dir": str(self.directory), "error": str(exc)},
                )
            if disk_full:
                self._refused_bytes = max(self._refused_bytes, len(record))
            raise SpoolWriteFailed(
                f"cannot append to the spool ({exc}): messages stay with the broker",
                disk_full=disk_full,
            ) from exc
        self._new_segment = False
        if self._refused_bytes:
            log.info("the spool's disk has room again", extra={"dir": str(self.directory)})
            self._refused_bytes = 0
        self._size += len(record)

    def _write_record(self, path: Path, record: bytes) -> None:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                if created:
                    self._sync_directory()
                left = memoryview(record)
                while left:  # a full disk takes part of a write before refusing the rest
                    step = os.write(fd, left)
                    if step <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    left = left[step:]
                os.fsync(fd)
            except OSError:
                self._cut_back(fd, path, size)
                raise
        finally:
            os.close(fd)

    def _cut_back(self, fd: int, path: Path, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            # What was written may stay, unacknowledged; keep new records clear of it.
            self._new_segment = True
            log.error(
                "cannot cut a failed append off the spool; the reader will skip it",
                extra={"segment": path.name, "offset": size, "error": str(exc)},
            )

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- replay ----------------------------------------------------------------------------

    def peek(self) -> list[str] | None:
        """The oldest batch not yet replayed, or None when the spool is empty.

        Damage met on the way is skipped, counted and logged, and the cursor moves past it.
        """
        for number in self._segments():
            if number < self._segment:
                continue
            offset = self._offset if number == self._segment else 0
            while (found := self._read_at(number, offset)) is not None:
                end, lines = found
                if lines is not None:
                    self._peeked = (number, end)
                    return lines
                self._skip_damage(number, offset, end)
                if self._segment != number:  # the damage ran to the end; segment gone
                    break
                offset = end
        self._peeked = None
        return None

    def pop(self) -> None:
        """Forget the batch ``peek`` returned: it is in InfluxDB now."""
        if self._peeked is None and self.peek() is None:
            return
        assert self._peeked is not None
        (number, end), self._peeked = self._peeked, None
        self._move_cursor(number, end)

    def _read_at(self, number: int, offset: int) -> tuple[int, list[str] | None] | None:
        """(end, lines) of the record at ``offset``, (end, None) for damage up to ``end``,
        or None at the end of the segment."""
        with self._path(number).open("rb") as handle:
            handle.seek(offset)
            head = handle.read(HEADER.size)
            if not head:
                return None
            header = _header(head, 0)
            if header is not None:
                length, payload_crc = header
                payload = handle.read(length)
                if len(payload) == length and crc32c(payload) == payload_crc:
                    return offset + HEADER.size + length, _decode(payload)
            handle.seek(offset)
            rest = handle.read()
        return offset + _next_record(rest, 0), None

    def _skip_damage(self, number: int, offset: int, end: int) -> None:
        self.corrupt_records += 1
        self.corrupt_bytes += end - offset
        log.error(
            "skipping a damaged spool record; the readings in it are lost",
            extra={"segment": self._path(number).name, "offset": offset, "bytes": end - offset},
        )
        segments = self._segments()
        if number == segments[-1]:
            self._new_segment = True
        self._move_cursor(number, end)

    def _move_cursor(self, number: int, offset: int) -> None:
        for older in self._segments():
            if older < number:
                self._path(older).unlink(missing_ok=True)
        self._segment, self._offset = number, offset
        segments = self._segments()
        if offset >= self._path(number).stat().st_size and number != segments[-1]:
            self._path(number).unlink(missing_ok=True)
            self._segment, self._offset = number + 1, 0
        self._write_cursor()
        self._size = self._pending_bytes()
