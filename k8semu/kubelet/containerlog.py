"""Container log files in the CRI format, and the pump that writes them.

Each record is one line of the file::

    2026-12-05T10:49:53.123456789Z stdout F hello

the time the kubelet read the bytes (UTC, always nine fraction digits, so records compare as
strings in time order), the stream (`stdout`/`stderr`), a tag (`F`: the text ends a line, whose
newline is not stored; `P`: a part of a line, more follows) and the text. A line longer than
`MAX_RECORD` is cut into P records, and output read with no newline yet is written at once as a
P record (a prompt shows while it waits), so the container's bytes come back exact: the plain
text of a log is its records' texts, each F adding its newline.

`Pump` owns reading a run's stdout and stderr pipes (named FIFOs next to the log, see
`RunPipes`) from the event loop: non-blocking reads of at most `CHUNK` bytes, written out before
the next read, so neither a flood nor a line with no newline grows the kubelet's memory or
holds its loop. `Decoder` and `tail_offset` turn records back into what clients asked for
(plain text, times, since, tail); this module never decides which file a request means.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import glob
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from k8semu.log import get_logger

log = get_logger(__name__)

CHUNK = 64 * 1024  # bytes read from a pipe at a time (and from a file)
MAX_RECORD = 16 * 1024  # longest text in one record, as containerd's CRI logger
# After a read that emptied the pipe, the next waits this long (s): a chatty run's lines then
# arrive a batch per read, not a wake-up of the kubelet per line; a flood (full reads) does not
# wait. It is also the most a line can wait before a follower sees it.
PACE = 0.02
PIPE_SIZE = 1 << 20  # pipe buffer asked for: output waits there while the kubelet restarts
STREAMS = (b"stdout", b"stderr")
_FRACTION = re.compile(r"\.(\d+)")
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), absent from older Pythons' fcntl


def stamp(ns: int) -> bytes:
    """`ns` (Unix nanoseconds) as the records' time: RFC 3339, UTC, nine fraction digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode() + b".%09dZ" % frac


def parse_time(text: str) -> int:
    """RFC 3339 text (any fraction, `Z` or an offset) as Unix nanoseconds; ValueError if not."""
    frac_ns = 0
    head = text
    found = _FRACTION.search(text)
    if found is not None:  # fromisoformat keeps microseconds only: read the fraction here
        head = text[: found.start()] + text[found.end() :]
        frac_ns = int(found.group(1)[:9].ljust(9, "0"))
    elif "." in text:
        raise ValueError(f"{text!r}: no digits after '.'")
    when = datetime.datetime.fromisoformat(head)
    if when.tzinfo is None or "T" not in head.upper():
        raise ValueError(f"{text!r}: not RFC 3339 (a date, 'T', a time and a zone)")
    return int(when.timestamp()) * 1_000_000_000 + frac_ns


def encode(stream: bytes, data: bytes, now: bytes) -> bytes:
    """The records of `data` read from `stream` at time `now` (a `stamp`)."""
    head = now + b" " + stream + b" "
    out: list[bytes] = []
    *lines, rest = data.split(b"\n")
    for line in lines:
        while len(line) > MAX_RECORD:
            out.append(head + b"P " + line[:MAX_RECORD] + b"\n")
            line = line[MAX_RECORD:]
        out.append(head + b"F " + line + b"\n")
    while rest:
        out.append(head + b"P " + rest[:MAX_RECORD] + b"\n")
        rest = rest[MAX_RECORD:]
    return b"".join(out)


@dataclass(slots=True)
class Record:
    time: bytes
    stream: bytes
    full: bool  # F: the text ends its line
    text: bytes


def parse(line: bytes) -> Record | None:
    """One record (without its newline); None when it is not one (a torn write)."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    tag = parts[2].split(b":", 1)[0]
    return Record(parts[0], parts[1], tag != b"P", parts[3] if len(parts) > 3 else b"")


@dataclass(slots=True)
class Decoder:
    """Records to what a client reads: their texts, each line prefixed with its time when
    `timestamps` (as Kubernetes, the time and a space), lines that started before `since` (a
    `stamp`) left out. Fed whole file blocks; a record cut by the block's end waits for the next.
    """

    timestamps: bool = False
    since: bytes = b""
    _carry: bytes = b""
    _open: dict[bytes, bool] = field(default_factory=dict)  # stream -> inside a line
    _skip: dict[bytes, bool] = field(default_factory=dict)  # stream -> that line is left out

    def records(self, data: bytes) -> Iterator[Record]:
        data = self._carry + data
        end = data.rfind(b"\n") + 1
        self._carry = data[end:]
        for line in data[:end].split(b"\n")[:-1]:
            rec = parse(line)
            if rec is not None:
                yield rec

    def pieces(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(stream, bytes) of each record of `data` the client gets."""
        for rec in self.records(data):
            starts = not self._open.get(rec.stream, False)
            if starts:
                self._skip[rec.stream] = bool(self.since) and rec.time < self.since
            self._open[rec.stream] = not rec.full
            if self._skip[rec.stream]:
                continue
            text = rec.text + b"\n" if rec.full else rec.text
            yield rec.stream, (rec.time + b" " + text if starts and self.timestamps else text)

    def feed(self, data: bytes) -> bytes:
        return b"".join(text for _, text in self.pieces(data))


def plain(data: bytes) -> bytes:
    """The plain text of whole records."""
    return Decoder().feed(data)


def read_plain(path: Path) -> bytes:
    """A log file's plain text (tests, small files)."""
    return plain(path.read_bytes())


def tail_offset(path: Path, lines: int, size: int | None = None) -> int:
    """Where the file's last `lines` lines start (a line: P records, then its F record; output
    after the last F is a line too), counting in its first `size` bytes (default: all of it).
    Reads backwards, one block at a time."""
    size = path.stat().st_size if size is None else size
    if lines <= 0:
        return size
    seen = 0
    inside = False  # a later line's records have been passed
    with path.open("rb") as f:
        pos, carry = size, b""
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step) + carry
            # Up to the block's first newline is the end of a record that starts before it.
            cut = block.find(b"\n") + 1 if pos > 0 else 0
            if pos > 0 and cut == 0:
                carry = block
                continue
            carry, body = block[:cut], block[cut:]
            ends: list[tuple[int, Record | None]] = []
            off = pos + cut
            for line in body.split(b"\n")[:-1]:  # after the last newline: a torn record
                off += len(line) + 1
                ends.append((off, parse(line)))
            for end, rec in reversed(ends):
                if rec is None:
                    continue
                if rec.full and inside:
                    seen += 1
                    if seen == lines:
                        return end
                inside = True
    return 0


def since_stamp(*, since_seconds: int | None, since_time: str) -> bytes:
    """The `stamp` from which lines are kept ("" for all); ValueError naming a bad field."""
    if since_seconds is not None:
        if since_seconds < 1:
            raise ValueError(f"since_seconds: Invalid value: {since_seconds}: must be > 0")
        return stamp(time.time_ns() - since_seconds * 1_000_000_000)
    if since_time:
        try:
            return stamp(parse_time(since_time))
        except ValueError as exc:
            raise ValueError(f"since_time: Invalid value: {exc}") from None
    return b""


# ---- writing -------------------------------------------------------------------------------


def _fifo_paths(cdir: Path, restart: int) -> dict[bytes, Path]:
    return {s: cdir / f"{restart}.{s.decode()}" for s in STREAMS}


@dataclass(slots=True)
class RunPipes:
    """The FIFOs of one run: the kubelet reads `readers`; the child gets `writers` as its
    stdout and stderr and also inherits `holds` (read ends it never reads), so its writes never
    fail with EPIPE while no kubelet reads (one restarting): they wait in the pipe instead."""

    readers: dict[bytes, int]
    writers: dict[bytes, int]
    holds: tuple[int, ...]

    @classmethod
    def make(cls, cdir: Path, restart: int) -> RunPipes:
        readers: dict[bytes, int] = {}
        writers: dict[bytes, int] = {}
        holds: list[int] = []
        try:
            for stream, path in _fifo_paths(cdir, restart).items():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.mkfifo(path, 0o600)
                readers[stream] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                writers[stream] = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                holds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
                with contextlib.suppress(OSError):  # above fs.pipe-max-size: the default stays
                    fcntl.fcntl(writers[stream], _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            for fd in [*readers.values(), *writers.values(), *holds]:
                os.close(fd)
            raise
        return cls(readers, writers, tuple(holds))

    def close_readers(self) -> None:
        for fd in self.readers.values():
            os.close(fd)
        self.readers = {}

    def spawned(self) -> None:
        """The child has its copies: the kubelet keeps only the read ends."""
        for fd in [*self.writers.values(), *self.holds]:
            os.close(fd)
        self.writers, self.holds = {}, ()


def reopen(cdir: Path, restart: int) -> dict[bytes, int]:
    """The read ends of a live run's FIFOs (an adopted container's), {} when it has none."""
    found: dict[bytes, int] = {}
    for stream, path in _fifo_paths(cdir, restart).items():
        try:
            found[stream] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
    return found


def remove_fifos(cdir: Path, restart: int) -> None:
    for path in _fifo_paths(cdir, restart).values():
        with contextlib.suppress(OSError):
            path.unlink()


def rotated(log_path: Path) -> list[Path]:
    """The rotated copies of `log_path` (`<name>.<UTC time>`), oldest first."""
    return sorted(log_path.parent.glob(glob.escape(log_path.name) + ".2*"))


@dataclass(frozen=True, slots=True)
class LogLimits:
    """The kubelet's --container-log-max-size (bytes; 0: never rotate) and
    --container-log-max-files (the current file included, as Kubernetes counts)."""

    max_bytes: int = 0
    max_files: int = 5


NO_ROTATION = LogLimits()


class Pump:
    """Copies a run's pipes into its log file as records, from the event loop's readers.

    Invariant: at most `CHUNK` bytes are held per read and they are written before the next
    read; the pump ends (`done`) when every pipe reports EOF (every writer, the run and what it
    left running, has closed it) or on `close()`.

    Rotation, as the kubelet's container log manager: once the file passes `limits.max_bytes`
    it is renamed `<file>.<UTC time>` and a new one is started (a follower notices the new
    file: `streaming.log_bytes`); the oldest copies go so that at most `limits.max_files`
    files remain. Only whole writes are rotated, so a record is never split across files."""

    def __init__(
        self, log_path: Path, readers: dict[bytes, int], limits: LogLimits = NO_ROTATION
    ) -> None:
        self.path = log_path
        self._fds = dict(readers)
        self._limits = limits
        self._size = 0
        self._out = self._open()
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._warned = False
        self._paused: dict[bytes, asyncio.TimerHandle] = {}
        for stream, fd in self._fds.items():
            self._loop.add_reader(fd, self._readable, stream, fd)
        if not self._fds:
            self.close()

    def _readable(self, stream: bytes, fd: int) -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("container output pipe failed", path=str(self.path), error=str(exc))
            data = b""
        if not data:
            self._drop(stream)
            return
        self._write(encode(stream, data, stamp(time.time_ns())))
        if len(data) < CHUNK:
            self._loop.remove_reader(fd)
            self._paused[stream] = self._loop.call_later(PACE, self._resume, stream, fd)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:  # the run is started: its output is dropped, not left to block
            log.warning("cannot open a container log", path=str(self.path), error=str(exc))
            fd = os.open(os.devnull, flags)
        self._size = os.fstat(fd).st_size
        return fd

    def _rotate(self) -> None:
        when = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.{when}")
        n = 0
        while target.exists():  # two rotations within a second
            n += 1
            target = self.path.with_name(f"{self.path.name}.{when}.{n}")
        try:
            os.rename(self.path, target)
        except OSError as exc:
            log.warning("cannot rotate a container log", path=str(self.path), error=str(exc))
            self._size = 0  # try again after another max_bytes, not at every write
            return
        os.close(self._out)
        self._out = self._open()
        for old in rotated(self.path)[: -(self._limits.max_files - 1) or None]:
            with contextlib.suppress(OSError):
                old.unlink()

    def _resume(self, stream: bytes, fd: int) -> None:
        del self._paused[stream]
        self._loop.add_reader(fd, self._readable, stream, fd)

    def _write(self, records: bytes) -> None:
        view = memoryview(records)
        try:
            while view:
                view = view[os.write(self._out, view) :]
        except OSError as exc:  # disk full...: the output is lost, the pipe still drained
            if not self._warned:
                self._warned = True
                log.warning("cannot write a container log", path=str(self.path), error=str(exc))
        self._size += len(records)
        if 0 < self._limits.max_bytes < self._size:
            self._rotate()

    def _drop(self, stream: bytes) -> None:
        fd = self._fds.pop(stream, None)
        paused = self._paused.pop(stream, None)
        if paused is not None:
            paused.cancel()
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)
        if not self._fds:
            self.close()

    def on_done(self, callback: Callable[[Pump], object]) -> None:
        self._done.add_done_callback(lambda _: callback(self))

    async def drained(self, timeout: float) -> bool:
        """Waits (at most `timeout` s) for every pipe's end; True when they all ended."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._done)
        return self._done.done()

    def close(self) -> None:
        """Stops reading (what is still in the pipes stays there) and closes the file."""
        for stream in list(self._fds):
            self._drop(stream)
        if not self._done.done():
            os.close(self._out)
            self._done.set_result(None)
