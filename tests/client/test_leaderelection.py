"""Leader election on a real Lease: one leader at a time, take-over after the leader dies,
leaseTransitions, release on cancel, and config validation."""

from __future__ import annotations

import asyncio
import time

import pytest

from k8semu.client import (
    DEFAULT_LEADER_ELECTION,
    KUBERNETES_LEADER_ELECTION,
    Client,
    LeaderElectionConfig,
    LeaderElector,
)
from k8semu.pb.api.v1 import coordination_pb2

from .conftest import eventually

# A leader renews every 0.2 s and keeps leading while one renewal in 4.5 s gets through: a
# renewal is one API request, which a busy CI machine (three workers beside real clusters) has
# been seen to hold up for more than the 1.5 s a tighter deadline allowed, and a leader that
# lost its lease that way made "a leads throughout" fail. The take-over waits out the 6 s lease.
STEADY = LeaderElectionConfig(lease_duration=6.0, renew_deadline=4.5, retry_period=0.2)
# How long a test waits for a leader: a lease expiring and a few API requests, on a busy host.
LEADS = 30.0


class Leaders:
    """Counts who is leading (between on_started_leading and its cancellation)."""

    def __init__(self) -> None:
        self.current: set[str] = set()
        self.max_at_once = 0
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.new_leader: dict[str, list[str]] = {}

    def elector(self, client: Client, name: str, identity: str, **kw: object) -> LeaderElector:
        async def lead() -> None:
            self.current.add(identity)
            self.max_at_once = max(self.max_at_once, len(self.current))
            self.started.append(identity)
            try:
                await asyncio.Event().wait()
            finally:
                self.current.discard(identity)

        return LeaderElector(
            client,
            name=name,
            identity=identity,
            namespace="default",
            config=kw.pop("config", STEADY),  # type: ignore[arg-type]
            on_started_leading=lead,
            on_stopped_leading=lambda: self.stopped.append(identity),
            on_new_leader=lambda who: self.new_leader.setdefault(identity, []).append(who),
        )


async def test_one_leader_then_takeover(client: Client) -> None:
    leaders = Leaders()
    a = leaders.elector(client, "ctrl", "a")
    b = leaders.elector(client, "ctrl", "b")
    a.start()
    await eventually(lambda: a.is_leader, LEADS, "a leads")
    b.start()
    try:
        # b watches a renew for a while: it must never lead meanwhile.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            assert a.is_leader and not b.is_leader
            await asyncio.sleep(0.02)
        assert b.leader == "a"
        lease = await client.get(coordination_pb2.Lease, "ctrl", namespace="default")
        assert lease.spec.holder_identity == "a"
        assert lease.spec.lease_transitions == 0
        assert lease.spec.lease_duration_seconds == 6

        await a.stop()  # no release: b must wait for the lease to expire
        assert leaders.stopped == ["a"]
        # How soon after the expiry b leads is a timing goal, not asserted here.
        await eventually(lambda: b.is_leader, LEADS, "b takes over")
        lease = await client.get(coordination_pb2.Lease, "ctrl", namespace="default")
        assert lease.spec.holder_identity == "b"
        assert lease.spec.lease_transitions == 1
        assert leaders.max_at_once == 1
        assert leaders.started == ["a", "b"]
        assert leaders.new_leader["b"] == ["a", "b"]
    finally:
        await a.stop()
        await b.stop()
    assert not b.is_leader and leaders.current == set()


async def test_many_candidates_one_leader(client: Client) -> None:
    leaders = Leaders()
    electors = [leaders.elector(client, "race", f"c{i}") for i in range(4)]
    for e in electors:
        e.start()
    try:
        await eventually(lambda: any(e.is_leader for e in electors), LEADS, "someone leads")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert sum(e.is_leader for e in electors) == 1
            await asyncio.sleep(0.02)
        assert leaders.max_at_once == 1
    finally:
        for e in electors:
            await e.stop()


async def test_release_on_cancel_hands_over_at_once(client: Client) -> None:
    leaders = Leaders()
    # A lease far longer than the wait for b below: b can only lead that soon if a released
    # it (no timed assertion: a stalled host delays b, it cannot make the lease expire early).
    cfg = LeaderElectionConfig(
        lease_duration=120.0, renew_deadline=90.0, retry_period=0.2, release_on_cancel=True
    )
    a = leaders.elector(client, "rel", "a", config=cfg)
    b = leaders.elector(client, "rel", "b", config=cfg)
    a.start()
    await eventually(lambda: a.is_leader, LEADS, "a leads")
    b.start()
    try:
        await eventually(lambda: b.leader == "a", LEADS, "b sees a lead")
        await a.stop()
        await eventually(lambda: b.is_leader, LEADS, "b takes over, well before the lease ends")
        lease = await client.get(coordination_pb2.Lease, "rel", namespace="default")
        assert lease.spec.lease_transitions == 1
    finally:
        await a.stop()
        await b.stop()


def test_config_defaults_and_validation() -> None:
    assert (DEFAULT_LEADER_ELECTION.lease_duration, DEFAULT_LEADER_ELECTION.renew_deadline) == (
        4.0,
        3.0,
    )
    assert KUBERNETES_LEADER_ELECTION.lease_duration_seconds == 15
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElectionConfig(lease_duration=2, renew_deadline=3, retry_period=0.5)
    with pytest.raises(ValueError, match="retry_period"):
        LeaderElectionConfig(lease_duration=4, renew_deadline=1, retry_period=1)
