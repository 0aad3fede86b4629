"""Container log files in the CRI format: records written by the pump from real pipes, read
back as plain text, with times, since a time and from the tail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from k8semu.kubelet import containerlog as cl

T0 = 1_700_000_000 * 1_000_000_000


def _write(path: Path, *parts: tuple[bytes, bytes, int]) -> None:
    path.write_bytes(b"".join(cl.encode(stream, data, cl.stamp(ns)) for stream, data, ns in parts))


def test_stamp_is_fixed_width_utc_and_parses_back() -> None:
    assert cl.stamp(T0 + 5) == b"2023-11-14T22:13:20.000000005Z"
    assert cl.parse_time("2023-11-14T22:13:20.000000005Z") == T0 + 5
    assert cl.parse_time("2023-11-14T23:13:20.5+01:00") == T0 + 500_000_000
    assert cl.parse_time("2023-11-14T22:13:20Z") == T0
    for bad in ("2023-11-14", "yesterday", "2023-11-14T22:13:20", "2023-11-14T22:13:20.Z"):
        with pytest.raises(ValueError):
            cl.parse_time(bad)


def test_records_keep_partial_and_long_lines_exact(tmp_path: Path) -> None:
    long = b"x" * (cl.MAX_RECORD * 2 + 10)
    data = b"one\n\ntwo-no-newline"
    log = tmp_path / "0.log"
    _write(log, (b"stdout", data, T0), (b"stdout", b" rest\n" + long + b"\n", T0 + 1))
    _write_more = cl.encode(b"stderr", b"oops\n", cl.stamp(T0 + 2))
    log.write_bytes(log.read_bytes() + _write_more)
    records = [cl.parse(line) for line in log.read_bytes().splitlines()]
    assert all(r is not None and len(r.text) <= cl.MAX_RECORD for r in records)
    assert [(r.stream, r.full) for r in records if r is not None][:4] == [
        (b"stdout", True), (b"stdout", True), (b"stdout", False), (b"stdout", True),
    ]  # fmt: skip
    assert cl.read_plain(log) == data + b" rest\n" + long + b"\noops\n"
    # Fed in odd blocks (a record cut between two reads), the text is the same.
    raw, dec = log.read_bytes(), cl.Decoder()
    assert b"".join(dec.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) == cl.plain(raw)


def test_times_and_since_apply_per_line() -> None:
    raw = b"".join(
        [
            cl.encode(b"stdout", b"old\npart", cl.stamp(T0)),
            cl.encode(b"stdout", b"-of-old\nnew\n", cl.stamp(T0 + 10)),
            cl.encode(b"stderr", b"err\n", cl.stamp(T0 + 11)),
        ]
    )
    t0, t10, t11 = cl.stamp(T0).decode(), cl.stamp(T0 + 10).decode(), cl.stamp(T0 + 11).decode()
    assert cl.Decoder(timestamps=True).feed(raw).decode() == (
        f"{t0} old\n{t0} part-of-old\n{t10} new\n{t11} err\n"
    )
    # A line is kept or left out by the time of its first part.
    assert cl.Decoder(since=cl.stamp(T0 + 5)).feed(raw) == b"new\nerr\n"
    assert cl.Decoder(since=cl.stamp(T0 + 11), timestamps=True).feed(raw) == f"{t11} err\n".encode()


def test_tail_counts_lines_not_records(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _write(log, (b"stdout", b"a\nb", T0), (b"stdout", b"b\nc\n", T0), (b"stdout", b"tail", T0))
    body = log.read_bytes()
    assert cl.plain(body[cl.tail_offset(log, 1) :]) == b"tail"
    assert cl.plain(body[cl.tail_offset(log, 2) :]) == b"c\ntail"
    assert cl.plain(body[cl.tail_offset(log, 3) :]) == b"bb\nc\ntail"
    assert cl.tail_offset(log, 10) == 0
    assert cl.tail_offset(log, 0) == len(body)
    # Across many blocks, with a torn record at the end (a write in progress).
    lines = [b"line %d" % i for i in range(20_000)]
    _write(log, (b"stdout", b"\n".join(lines) + b"\n", T0))
    with log.open("ab") as f:
        f.write(cl.stamp(T0) + b" stdout F half-writ")
    off = cl.tail_offset(log, 12_345)
    assert cl.plain(log.read_bytes()[off:]) == b"\n".join(lines[-12_345:]) + b"\n"


def test_since_stamp_checks_its_fields() -> None:
    assert cl.since_stamp(since_seconds=None, since_time="") == b""
    assert cl.since_stamp(since_seconds=None, since_time="2023-11-14T22:13:20Z") == cl.stamp(T0)
    with pytest.raises(ValueError, match="since_seconds"):
        cl.since_stamp(since_seconds=0, since_time="")
    with pytest.raises(ValueError, match="since_time"):
        cl.since_stamp(since_seconds=None, since_time="soon")


async def test_pump_copies_a_process_output_and_ends_with_it(tmp_path: Path) -> None:
    script = (
        "printf 'out1\\nprompt> '; printf 'err1\\n' >&2; "
        "head -c 200000 /dev/zero | tr '\\0' y; printf '\\nlast'"
    )
    pipes = cl.RunPipes.make(tmp_path, 0)
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", script,
        stdout=pipes.writers[b"stdout"], stderr=pipes.writers[b"stderr"], pass_fds=pipes.holds,
    )  # fmt: skip
    pipes.spawned()
    pump = cl.Pump(tmp_path / "0.log", pipes.readers)
    assert await proc.wait() == 0
    assert await pump.drained(30.0)
    records = [cl.parse(line) for line in (tmp_path / "0.log").read_bytes().splitlines()]
    assert all(r is not None and len(r.text) <= cl.MAX_RECORD for r in records)
    out = b"".join(
        t for s, t in cl.Decoder().pieces((tmp_path / "0.log").read_bytes()) if s == b"stdout"
    )
    assert out == b"out1\nprompt> " + b"y" * 200_000 + b"\nlast"
    assert cl.read_plain(tmp_path / "0.log").count(b"err1\n") == 1
    cl.remove_fifos(tmp_path, 0)
    assert not list(tmp_path.glob("0.std*"))


async def test_output_waits_in_the_pipe_while_no_pump_reads(tmp_path: Path) -> None:
    """A kubelet restart: the run holds read ends, so its writes neither fail nor kill it;
    a new pump on the reopened FIFOs gets what was written meanwhile. (A run that ends while no
    kubelet reads loses what waits: the pipe goes with its last holder.)"""
    pipes = cl.RunPipes.make(tmp_path, 3)
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "echo before; read x; echo after; read y; echo end >&2",
        stdin=asyncio.subprocess.PIPE, stdout=pipes.writers[b"stdout"],
        stderr=pipes.writers[b"stderr"], pass_fds=pipes.holds,
    )  # fmt: skip
    pipes.spawned()
    pipes.close_readers()  # the kubelet is gone
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    readers = cl.reopen(tmp_path, 3)
    assert set(readers) == {b"stdout", b"stderr"}
    pump = cl.Pump(tmp_path / "3.log", readers)
    proc.stdin.close()
    assert await proc.wait() == 0  # no SIGPIPE
    assert await pump.drained(30.0)
    # Two pipes: their order against each other is the order the pump read them in.
    pieces = list(cl.Decoder().pieces((tmp_path / "3.log").read_bytes()))
    assert b"".join(t for s, t in pieces if s == b"stdout") == b"before\nafter\n"
    assert b"".join(t for s, t in pieces if s == b"stderr") == b"end\n"
