"""The client's timings as small config objects with named defaults (design decision 6).

Owns deadlines and retry pacing of API calls only; informer and leader-election timings live
with their owners (`InformerConfig`, `LeaderElectionConfig`). No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu import transport

DEFAULT_WATCH_DEADLINE = 300.0
DEFAULT_ENDPOINT_COOLOFF = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Deadlines in seconds: `call` for every unary call, `watch` for one watch stream.

    A watch that reaches its deadline simply ends (Kubernetes' watch timeoutSeconds); an
    informer then watches again from the last resourceVersion it saw, so a long deadline
    costs nothing and bounds how long a stream to a silently dead server can hang.
    """

    call: float = transport.DEFAULT_DEADLINES.unary
    watch: float = DEFAULT_WATCH_DEADLINE

    def __post_init__(self) -> None:
        if not self.call > 0:
            raise ValueError(f"call: must be > 0, got {self.call}")
        if not self.watch > 0:
            raise ValueError(f"watch: must be > 0, got {self.watch}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retries:
    """Fail-over and retries of calls (see `Client` for which calls are sent again when).

    A call makes at most `attempts` tries. A try moves on to the next API server endpoint at
    once; once every endpoint has failed in this call, it waits `base_delay * 2**round` (at
    most `max_delay`) first. An endpoint that answered UNAVAILABLE is passed over by later calls
    for `cooloff` seconds while another endpoint is not. Every call moves on when no connection
    could be made; reads also on any UNAVAILABLE; writes that were sent and broke off only
    when sending them again is safe.
    """

    attempts: int = 6
    base_delay: float = 0.05
    max_delay: float = 1.0
    cooloff: float = DEFAULT_ENDPOINT_COOLOFF

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts: must be >= 1, got {self.attempts}")
        if not self.base_delay >= 0:
            raise ValueError(f"base_delay: must be >= 0, got {self.base_delay}")
        if not self.max_delay >= self.base_delay:
            raise ValueError(f"max_delay: must be >= base_delay, got {self.max_delay}")
        if not self.cooloff >= 0:
            raise ValueError(f"cooloff: must be >= 0, got {self.cooloff}")

    def delay(self, round_: int) -> float:
        """The pause before round `round_` (1-based) of tries over every endpoint."""
        return float(min(self.max_delay, self.base_delay * 2.0 ** min(round_ - 1, 60)))


DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRIES = Retries()
NO_RETRIES = Retries(attempts=1)
