"""The durable, resumable JSONL log every front end writes its records to.

`OutputLog` appends one whole line per record with one write and an fsync, cuts a
torn last line on open and locks the file against a second writer; `read_log`
reads the same records without writing anything. A record of ours is a JSON
object with "id" and "method".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specs_local.errors import SpecsError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, the log still works
    fcntl = None

Record = dict[str, Any]


def record_id(record: Record) -> str:
    """The resume key of a batch record: its problem id."""
    return record["id"]


# How json.dumps writes every record of ours (error_record, result_record): "id" is the first key.
RECORD_START = b'{"id": '


def _is_record(value: Any) -> bool:
    """Whether a parsed line is a record of this program: batch and bench records all have both keys."""
    return isinstance(value, dict) and "id" in value and "method" in value


def _torn_tail_start(data: bytes) -> int | None:
    """Where a torn last line starts (one that is not JSON); None if there is none.

    A last line that is whole JSON is not torn, newline or not: a record is kept,
    anything else is refused by `_parse_records`."""
    body = data[:-1] if data.endswith(b"\n") else data
    start = body.rfind(b"\n") + 1
    if not body[start:].strip():
        return None
    try:
        json.loads(body[start:])
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return start
    return None


def _could_be_torn_record(fragment: bytes, after_records: bool) -> bool:
    """Whether a torn tail is provably ours, so that cutting it loses nothing of anyone's:
    it starts as our records start, or it follows our records and is the start of a
    JSON object or the zeros of a lost write."""
    if fragment.startswith(RECORD_START):
        return True
    return after_records and (fragment.startswith(b"{") or not fragment.strip(b"\x00\n"))


def _not_a_record(path: Path, number: int) -> SpecsError:
    return SpecsError(f"{path} line {number} is not a specs-local record; choose another output file")


def _parse_records(path: Path, data: bytes) -> list[Record]:
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not _is_record(record):
            raise _not_a_record(path, number)
        records.append(record)
    return records


def _records_before_torn_tail(path: Path, data: bytes) -> tuple[list[Record], int | None]:
    """The records of ``data`` and where its torn last line starts (None if whole);
    a torn line that is not provably ours is refused."""
    tail = _torn_tail_start(data)
    records = _parse_records(path, data if tail is None else data[:tail])
    if tail is not None and not _could_be_torn_record(data[tail:], after_records=bool(records)):
        raise _not_a_record(path, data.count(b"\n", 0, tail) + 1)
    return records, tail


def read_log(path: str | os.PathLike, key: Callable[[Record], Any] = record_id) -> dict[Any, Record]:
    """The records of an OutputLog file by key (the last of a key wins), read
    without locking, creating or repairing it: a torn last line is skipped, not
    cut, so reading a log that another run is writing changes nothing. A file
    that does not exist holds no records."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise SpecsError(f"cannot read {path}: {error.strerror or error}") from None
    return {key(r): r for r in _records_before_torn_tail(path, data)[0]}


def _fsync_directory(path: Path) -> None:
    """Make a newly created file's directory entry durable too."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputLog:
    """A durable, resumable JSONL file of records.

    On open, a torn last line (left by a crash or power loss) is cut away, then the
    records on disk are read: `key in log` says whether a record with that key is
    already done. `append` writes one whole line with a single write on an
    O_APPEND descriptor and fsyncs it, so a kill at any moment leaves only complete
    lines. An exclusive lock keeps two runs from appending to the same file.
    `key` maps a record to its resume key (bench can key on (id, method)). With
    `retry_errors`, a key whose last record is an error counts as not done: its next
    record is appended after it and, read back, supersedes it.
    """

    def __init__(self, path: str | os.PathLike, key: Callable[[Record], Any] = record_id, *,
                 retry_errors: bool = False):
        self.path = Path(path)
        self.key = key
        self.repaired = False  # whether a torn last line was cut away on open
        self._newline_first = False  # whether the last record on disk lacks its newline
        created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise SpecsError(f"cannot open {self.path}: {error.strerror or error}") from None
        try:
            self._lock()
            if created:
                _fsync_directory(self.path)
            self.records: dict[Any, Record] = {key(r): r for r in self._load()}  # the last record of a key wins
            if retry_errors:
                self.records = {k: r for k, r in self.records.items() if "error" not in r}
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecsError(f"{self.path} is being written by another run") from None

    def _load(self) -> list[Record]:
        """The records on disk, after cutting a torn last line away.

        Everything is checked before anything is cut, so a file that is not ours is
        refused untouched.
        """
        data = self.path.read_bytes()
        records, tail = _records_before_torn_tail(self.path, data)
        if tail is not None:
            os.ftruncate(self._fd, tail)
            os.fsync(self._fd)
            self.repaired = True
            data = data[:tail]
        # A whole last record without its newline (a hand edit, json.dump) stays; the next line starts anew.
        self._newline_first = bool(data) and not data.endswith(b"\n")
        return records

    def __contains__(self, key: Any) -> bool:
        return key in self.records

    def append(self, record: Record) -> None:
        line = ("\n" * self._newline_first + json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # disk full: the torn line is repaired on the next open
            raise SpecsError(f"short write to {self.path} ({written} of {len(line)} bytes); is the disk full?")
        os.fsync(self._fd)
        self._newline_first = False
        self.records[self.key(record)] = record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the lock
            self._fd = -1

    def __enter__(self) -> OutputLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
