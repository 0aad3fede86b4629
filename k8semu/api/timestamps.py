"""Timestamps of API objects, at the two precisions Kubernetes gives them.

- `metav1.Time` (creationTimestamp, deletionTimestamp, condition times, a taint's timeAdded,
  an Event's first/lastTimestamp, container start and finish): whole seconds. Kubernetes
  truncates these to seconds in JSON and in protobuf alike, so a client never sees a
  fraction it could not write back.
- `metav1.MicroTime` (a Lease's acquireTime and renewTime, an Event's eventTime): microseconds,
  printed with six fractional digits.

One deliberate difference: a taint's timeAdded keeps microseconds. Eviction deadlines are
timeAdded plus a toleration, and the emulator's are seconds (5 s by default, 300 s in
Kubernetes), so truncating would evict a pod up to a second (a fifth of the timeout) early.

Every component stamps objects through these functions, so the same field has the same
precision whoever writes it. Both print as RFC 3339 in UTC ("2024-01-01T00:00:00Z",
"2024-01-01T00:00:00.000000Z"). Pure, apart from reading the wall clock in `now`/`micro_now`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

_NANOS = 1_000_000_000
_MICROS = 1_000_000


def time_at(seconds: float) -> timestamp_pb2.Timestamp:
    """A metav1.Time for `seconds` since the epoch: truncated to whole seconds."""
    ts = timestamp_pb2.Timestamp()
    ts.FromSeconds(int(seconds // 1))
    return ts


def micro_time_at(seconds: float) -> timestamp_pb2.Timestamp:
    """A metav1.MicroTime for `seconds` since the epoch: truncated to microseconds."""
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(int(seconds * _MICROS))
    return ts


def now() -> timestamp_pb2.Timestamp:
    """The wall clock as a metav1.Time."""
    return time_at(time.time_ns() // _NANOS)


def micro_now() -> timestamp_pb2.Timestamp:
    """The wall clock as a metav1.MicroTime."""
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(time.time_ns() // 1000)
    return ts


def to_seconds(ts: timestamp_pb2.Timestamp) -> float:
    """Seconds since the epoch of any timestamp (0.0 for an unset one)."""
    return ts.seconds + ts.nanos / _NANOS


def format_time(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 at second precision, as Kubernetes prints a metav1.Time."""
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 with six fractional digits, as Kubernetes prints a metav1.MicroTime."""
    micros = ts.nanos // 1000
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def parse(text: str) -> timestamp_pb2.Timestamp:
    """An RFC 3339 time ("2024-01-01T00:00:00Z", any fraction, any offset), as written in
    manifests; raises ValueError naming what is wrong."""
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts
