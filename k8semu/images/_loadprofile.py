"""Load profiles for the loadgen image: a request rate that changes over time.

A profile is a comma-separated list of segments, each ``RATE/DURATION`` (hold RATE requests/s
for DURATION) or ``FROM-TO/DURATION`` (ramp linearly from FROM to TO); durations as ``30s``,
``1m``, ``500ms`` or plain seconds. Shapes people ask for:

    steady  ``20/2m``
    steps   ``10/30s,20/30s,40/30s``
    ramp    ``0-50/1m,50/30s``
    spike   ``10/30s,100/5s,10/30s``
    drop    ``40/30s,0/30s``

The profile bounds the run: it ends when the last segment does (at most MAX_TOTAL). Pure:
`time_of(n)` is when request n (0-based) is due, relative to the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from k8semu import durations

MAX_RATE = 100_000.0  # requests/s
MAX_TOTAL = 24 * 3600.0  # seconds
MAX_SEGMENTS = 1000


class ProfileError(ValueError):
    """A profile text that does not parse; the message names the segment."""


@dataclass(frozen=True, slots=True)
class Segment:
    start_rate: float
    end_rate: float
    duration: float

    @property
    def requests(self) -> float:
        """How many requests the segment holds (its area)."""
        return (self.start_rate + self.end_rate) / 2 * self.duration

    def offset_of(self, n: float) -> float:
        """When, within the segment, the cumulative count reaches `n` (0 <= n <= requests)."""
        r0, r1, d = self.start_rate, self.end_rate, self.duration
        slope = (r1 - r0) / d
        if abs(slope) < 1e-12:
            return n / r0
        # r0*t + slope*t^2/2 = n  ->  t = (-r0 + sqrt(r0^2 + 2*slope*n)) / slope
        disc = max(0.0, r0 * r0 + 2 * slope * n)
        return (-r0 + math.sqrt(disc)) / slope

    def rate_at(self, offset: float) -> float:
        return self.start_rate + (self.end_rate - self.start_rate) * offset / self.duration


@dataclass(frozen=True, slots=True)
class Profile:
    segments: tuple[Segment, ...]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def time_of(self, n: int) -> float | None:
        """When request `n` is due, seconds after the start; None once the profile is over."""
        before = 0.0  # requests in earlier segments
        elapsed = 0.0
        for seg in self.segments:
            area = seg.requests
            # (less a hair: 200/s x 0.1 s is 20.000000000000004 requests, not 21)
            if n < before + area - 1e-9:
                return elapsed + seg.offset_of(n - before)
            before += area
            elapsed += seg.duration
        return None

    def rate_at(self, t: float) -> float:
        """The target rate `t` seconds after the start (0 after the end)."""
        elapsed = 0.0
        for seg in self.segments:
            if t < elapsed + seg.duration:
                return seg.rate_at(t - elapsed)
            elapsed += seg.duration
        return 0.0


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        try:
            value = durations.parse_ms(text) / 1000
        except ValueError as exc:
            raise ProfileError(f"{where}: bad duration {text!r}: {exc}") from None
    if not 0 < value <= MAX_TOTAL:
        raise ProfileError(f"{where}: duration must be > 0 and <= {MAX_TOTAL:.0f}s, got {text!r}")
    return value


def _rate(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProfileError(f"{where}: bad rate {text!r} (requests/s)") from None
    if not 0 <= value <= MAX_RATE:
        raise ProfileError(f"{where}: rate must be 0..{MAX_RATE:.0f} requests/s, got {text!r}")
    return value


def parse_profile(text: str) -> Profile:
    """``RATE/DURATION`` or ``FROM-TO/DURATION`` segments, comma-separated."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ProfileError("empty profile (want e.g. 10/30s,20/30s)")
    if len(parts) > MAX_SEGMENTS:
        raise ProfileError(f"more than {MAX_SEGMENTS} segments")
    segments = []
    for i, part in enumerate(parts):
        where = f"segment {i + 1} ({part!r})"
        rates, sep, length = part.partition("/")
        if not sep:
            raise ProfileError(f"{where}: want RATE/DURATION or FROM-TO/DURATION")
        low, dash, high = rates.partition("-")
        start = _rate(low.strip(), where)
        end = _rate(high.strip(), where) if dash else start
        segments.append(Segment(start, end, _seconds(length.strip(), where)))
    profile = Profile(tuple(segments))
    if profile.duration > MAX_TOTAL:
        raise ProfileError(f"the profile lasts {profile.duration:.0f}s, more than {MAX_TOTAL:.0f}s")
    return profile
