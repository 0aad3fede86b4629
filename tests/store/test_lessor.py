"""Lessor: leader-local lease deadlines driven by an injected clock."""

from __future__ import annotations

from k8semu.store.lessor import Lessor


def leader(now: float = 0.0, **kw: float) -> Lessor:
    lessor = Lessor(**kw)  # type: ignore[arg-type]
    lessor.promote(now)
    return lessor


def test_expiry_reported_once() -> None:
    ls = leader()
    ls.grant(1, 10, now=0)
    ls.grant(2, 5, now=1)
    assert ls.expired(5.9) == []
    assert ls.expired(6) == [2]
    assert ls.expired(100) == [1]  # earliest deadline first, each id once
    assert ls.expired(200) == []
    assert ls.remaining(1, 100) == 0 and 1 in ls


def test_renew_rearms_and_revoke_forgets() -> None:
    ls = leader()
    ls.grant(1, 10, now=0)
    assert ls.renew(1, now=8) == 10
    assert ls.expired(17.5) == []
    assert ls.expired(18) == [1]
    assert ls.renew(1, now=30) == 10  # renewing a reported lease re-arms it
    assert ls.expired(39) == [] and ls.expired(40) == [1]
    ls.revoke(1)
    assert ls.renew(1, now=41) is None and ls.remaining(1, 41) == -1
    assert ls.expired(1000) == [] and len(ls) == 0
    ls.revoke(12345)  # unknown ids are ignored


def test_remaining_rounds_up() -> None:
    ls = leader(now=100.0)
    ls.grant(7, 10, now=100.0)
    assert ls.remaining(7, 100.0) == 10
    assert ls.remaining(7, 100.5) == 10
    assert ls.remaining(7, 109.01) == 1
    assert ls.remaining(7, 110.0) == 0
    assert ls.remaining(8, 100.0) == -1
    assert ls.ttl(7) == 10 and ls.ttl(8) is None


def test_followers_never_expire_and_promotion_restarts_ttls() -> None:
    ls = Lessor([(1, 10), (2, 30)])
    assert not ls.primary
    ls.grant(3, 5, now=0)
    assert ls.renew(3, now=1) == 5
    assert ls.expired(1e9) == []
    assert ls.remaining(3, 3) == 3  # a follower estimates from the keep-alive it applied
    assert ls.remaining(1, 1e9) == 10  # ... and reports the full TTL of one it never saw
    ls.promote(now=1000)
    assert ls.primary
    assert ls.remaining(1, 1000) == 10 and ls.remaining(2, 1000) == 30
    assert ls.expired(1004.9) == []  # nobody expires early because leadership moved
    assert ls.expired(1005) == [3]
    assert ls.expired(1010) == [1]
    assert ls.expired(1030) == [2]
    ls.demote()
    ls.grant(4, 1, now=0)
    assert ls.expired(1e9) == []
    ls.promote(now=5000)  # a new term reports again what the old one reported
    assert ls.expired(5030) == [4, 3, 1, 2]


def test_retry_after_reports_again_until_revoked() -> None:
    ls = leader(retry_after=3.0)
    ls.grant(1, 10, now=0)
    assert ls.expired(10) == [1]
    assert ls.expired(12.9) == []
    assert ls.expired(13) == [1]
    ls.revoke(1)
    assert ls.expired(100) == []


def test_many_renewals_keep_memory_bounded() -> None:
    ls = leader()
    ls.grant(1, 10, now=0)
    for t in range(10_000):
        ls.renew(1, now=t)
    assert len(ls._heap) < 200
    assert ls.expired(10_008) == [] and ls.expired(10_009) == [1]
