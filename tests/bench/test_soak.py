"""`k8semu bench soak`: the growth verdict on synthetic samples, the compaction-revision
probe on a real store and a real etcd, the report, and one short real soak whose report must
be complete (its verdict is not asserted: timings and growth on a shared machine vary)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from k8semu import transport
from k8semu.bench import soak
from k8semu.bench.soak import (
    ComponentSample,
    IntervalSample,
    Limits,
    MemberSample,
    SoakOptions,
    SoakResult,
    verdict,
)
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.apiserver import one_replica, running

ENV = {"load_average": (0.0, 0.0, 0.0), "cpus": 2, "cpu_model": "x", "date": "now"}
COMPONENTS = ("store-s1", "apiserver-1", "kubelet-node-1")


def _sample(
    i: int,
    *,
    db: int = 10_000_000,
    log: int = 8_000_000,
    rss: dict[str, float] | None = None,
    fds: dict[str, int] | None = None,
    leader_changes: int = 0,
    term: int = 0,
    leases: dict[str, int | None] | None = None,
    restarts: Sequence[str] = (),
    writes: int = 500,
) -> IntervalSample:
    """Sample i (at i x 10 s); every figure steady unless given."""
    rss = rss or {}
    fds = fds or {}
    return IntervalSample(
        index=i,
        t_s=10.0 * i,
        writes=writes,
        write_rate=writes / 10,
        members=[
            MemberSample(name=n, db_file=db, log_files=log, revision=1000 * i)
            for n in ("s1", "s2", "s3")
        ],
        components=[
            ComponentSample(
                name=n,
                kind=n.split("-")[0],
                pid=100 + k,
                rss_mb=rss.get(n, 60.0),
                fds=fds.get(n, 30),
            )
            for k, n in enumerate(COMPONENTS)
        ],
        store_leader_changes=leader_changes,
        store_term_bumps=term,
        lease_changes=leases if leases is not None else {"kube-system/kube-scheduler": 0},
        restarts=list(restarts),
    )


def _failed(checks: Sequence[soak.Check]) -> list[str]:
    """The gating checks that failed."""
    return [c.name for c in checks if not c.passed and c.gating]


WARMUP = 30.0  # the baseline is sample 3


def test_steady_samples_pass() -> None:
    samples = [_sample(i) for i in range(1, 10)]
    checks = verdict(samples, warmup=WARMUP, write_rate=50)
    assert all(c.passed for c in checks if c.gating), checks
    # Never compacted is reported, not gating.
    compacted = next(c for c in checks if "compacted" in c.name)
    assert not compacted.passed and not compacted.gating


def test_database_file_growth_is_judged_against_the_end_of_warm_up() -> None:
    # Growth during warm-up does not count: 1 MB -> 10 MB before 30 s, then steady.
    early = [_sample(i, db=1_000_000 * (1 + 4 * i)) for i in range(1, 3)]
    steady = early + [_sample(i, db=10_000_000) for i in range(3, 10)]
    assert not _failed(verdict(steady, warmup=WARMUP))
    # 2x exactly is within bounds; more is unbounded growth.
    at_limit = [_sample(i, db=10_000_000 if i < 9 else 20_000_000) for i in range(1, 10)]
    assert not _failed(verdict(at_limit, warmup=WARMUP))
    grown = [_sample(i, db=10_000_000 if i < 9 else 20_000_001) for i in range(1, 10)]
    checks = verdict(grown, warmup=WARMUP)
    bad = [c for c in checks if not c.passed and c.gating]
    assert [c.name for c in bad] == ["store database file <= 2x its size at the end of warm-up"]
    assert "2.00x" in bad[0].detail and "s3" in bad[0].detail
    log = [_sample(i, log=8_000_000 * (1 if i < 5 else 3)) for i in range(1, 10)]
    assert _failed(verdict(log, warmup=WARMUP)) == [
        "store Raft log files <= 2x its size at the end of warm-up"
    ]


def test_rss_growth_over_the_limit_fails_and_names_the_component() -> None:
    ok = [_sample(i, rss={"apiserver-1": 60.0 + i}) for i in range(1, 10)]  # 63 -> 69: 1.10x
    assert not _failed(verdict(ok, warmup=WARMUP))
    grown = [_sample(i, rss={"apiserver-1": 60.0 + 3 * i}) for i in range(1, 10)]  # 69 -> 87
    bad = [c for c in verdict(grown, warmup=WARMUP) if not c.passed and c.gating]
    assert len(bad) == 1 and "RSS" in bad[0].name and "apiserver-1 69->87 MB" in bad[0].detail
    strict = Limits(rss_ratio=1.05)
    assert _failed(verdict(ok, warmup=WARMUP, limits=strict))


def test_fds_growing_monotonically_fail_but_fluctuating_ones_do_not() -> None:
    leak = [_sample(i, fds={"store-s1": 30 + 3 * i}) for i in range(1, 10)]  # 39 -> 57
    bad = [c for c in verdict(leak, warmup=WARMUP) if not c.passed and c.gating]
    assert len(bad) == 1 and "fds" in bad[0].name and "store-s1 39->57" in bad[0].detail
    # Same net growth with one dip after the baseline: not monotonic.
    wobble = [
        _sample(i, fds={"store-s1": 30 + 3 * i - (10 if i == 6 else 0)}) for i in range(1, 10)
    ]
    assert not _failed(verdict(wobble, warmup=WARMUP))
    # Monotonic but small (a connection or two): within the slack.
    small = [_sample(i, fds={"store-s1": 30 + (i >= 7) * 2}) for i in range(1, 10)]
    assert not _failed(verdict(small, warmup=WARMUP))


def test_any_leader_change_or_restart_fails() -> None:
    base = [_sample(i) for i in range(1, 9)]
    term = [*base, _sample(9, term=1)]  # an election between two polls: term rose
    assert any("leader" in c.name and not c.passed for c in verdict(term, warmup=WARMUP))
    moved = [*base, _sample(9, leader_changes=1, term=1)]
    assert any("store leader" in c.name and not c.passed for c in verdict(moved, warmup=WARMUP))
    lease = [*base, _sample(9, leases={"kube-system/kube-scheduler": 1})]
    assert any("control-plane" in c.name and not c.passed for c in verdict(lease, warmup=WARMUP))
    # The same holder winning its Lease back after a missed renewal: its log says so.
    again = [*base, _sample(9)]
    again[-1].became_leader = {"controller-manager-1": 2, "scheduler-1": 0}
    bad = [c for c in verdict(again, warmup=WARMUP) if not c.passed and c.gating]
    assert len(bad) == 1 and "controller-manager-1 led again 2x" in bad[0].detail
    # A Lease never found (no leader election) is not a change.
    absent = [_sample(i, leases={"kube-system/kube-scheduler": None}) for i in range(1, 10)]
    assert not _failed(verdict(absent, warmup=WARMUP))
    # A restart during warm-up still counts.
    restart = [_sample(i, restarts=["kubelet-node-1"] if i == 2 else ()) for i in range(1, 10)]
    bad = [c for c in verdict(restart, warmup=WARMUP) if not c.passed and c.gating]
    assert len(bad) == 1 and bad[0].detail == "kubelet-node-1"


def test_too_few_samples_after_warm_up_is_a_failure_not_a_pass() -> None:
    checks = verdict([_sample(i) for i in range(1, 4)], warmup=WARMUP)
    assert [c.passed for c in checks] == [False]
    with pytest.raises(ValueError, match="--duration"):
        SoakOptions(duration=60, interval=60, warmup=30).check()


def test_informational_checks_do_not_gate() -> None:
    slow = [_sample(i, writes=200) for i in range(1, 10)]  # 20 writes/s of 50 asked
    r = SoakResult(options=SoakOptions(), samples=slow)
    r.checks = verdict(slow, warmup=WARMUP, write_rate=50)
    rate = next(c for c in r.checks if "write rate" in c.name)
    assert not rate.passed and not rate.gating
    assert r.passed


def test_render_json_and_plot_from_samples(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    samples = [_sample(i, rss={"apiserver-1": 60.0 + 6 * i}) for i in range(1, 7)]
    samples[0].members[0].is_leader = True
    samples[0].latency = {"create": soak.VerbLatency(10, 5.0, 8.0, 12.0, 20.0)}
    r = SoakResult(options=SoakOptions(duration=60, interval=10, warmup=30), samples=samples)
    r.checks = verdict(samples, warmup=30, write_rate=50)
    text = soak.render(r, ENV)
    assert "| 1 | 10 | 50.0 | 0 | 5/12 |" in text
    assert "| store-s1 | apiserver-1 | kubelet-node-1 |" in text
    assert "FAIL" in text and text.endswith("Verdict: FAIL")
    doc = soak.to_json(r, ENV)
    assert doc["result"]["passed"] is False
    assert doc["result"]["samples"][0]["db_file_max"] == 10_000_000
    json.dumps(doc, default=str)
    png = tmp_path / "soak.png"
    soak.plot(r, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_flags_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, flag in (
        (["--duration", "10"], "--duration"),
        (["--interval", "0s"], "--interval"),
        (["--write-rate", "0"], "--write-rate"),
        (["--duration", "1m", "--warmup", "5m"], "--duration"),
    ):
        with pytest.raises(SystemExit) as exc:
            soak.main(argv)
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err


# -- the compaction revision, read the same way from k8semu's store and a real etcd -----------


async def _put_and_compact(endpoint: str) -> tuple[int, int]:
    """Three puts, a compaction at the second; returns (compaction revision, revision)."""
    async with transport.channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        revs = []
        for i in range(3):
            put = await kv.Put(rpc_pb2.PutRequest(key=b"/soak-test/k", value=b"%d" % i), timeout=5)
            revs.append(put.header.revision)
        assert await soak.compaction_revision(kv, revs[-1]) == 0  # never compacted
        await kv.Compact(rpc_pb2.CompactionRequest(revision=revs[1], physical=True), timeout=5)
        found = await soak.compaction_revision(kv, revs[-1])
        # From a lower bound already known (the soak passes the last one found).
        assert await soak.compaction_revision(kv, revs[-1], lo=found) == found
        assert await soak.compaction_revision(kv, revs[-1], lo=revs[0]) == found
        return found, revs[1]


@pytest.mark.parametrize("backend", ["k8semu", "etcd"])
def test_compaction_revision_probe(backend: str, tmp_path: Path) -> None:
    with running(one_replica(backend, tmp_path / backend)) as cluster:
        found, expected = asyncio.run(_put_and_compact(cluster.endpoints[0]))
    assert found == expected


# -- one short real soak -----------------------------------------------------------------------


@pytest.mark.benchmark
@pytest.mark.timeout(240)
def test_short_soak_report_is_complete(tmp_path: Path) -> None:
    opts = SoakOptions(
        duration=30.0, interval=10.0, warmup=10.0, write_rate=20.0, progress=False, seed=7
    )
    opts.check()
    r = soak.run(opts, workdir=tmp_path / "work")
    assert not r.error, r.error
    assert [s.index for s in r.samples] == [1, 2, 3]
    assert r.writes > 0
    for s in r.samples:
        assert {m.name for m in s.members} == {"s1", "s2", "s3"}
        assert all(not m.error for m in s.members), [m.error for m in s.members]
        assert all(m.db_file > 0 and m.log_files > 0 and m.db_size > 0 for m in s.members)
        assert sum(m.is_leader for m in s.members) == 1
        assert s.revision > 0 and s.compact_revision <= s.revision
        kinds = {c.kind for c in s.components}
        assert {"store", "apiserver", "scheduler", "controller-manager", "kubelet"} <= kinds
        assert all(c.pid and c.rss_mb > 0 and c.fds > 0 for c in s.components)
        assert set(s.lease_changes) == {
            "kube-system/kube-scheduler",
            "kube-system/kube-controller-manager",
        }
    assert r.samples[-1].revision > r.samples[0].revision
    assert {"create", "patch", "delete"} <= set().union(*(s.latency for s in r.samples))
    assert any(s.latency["create"].count for s in r.samples if "create" in s.latency)
    names = [c.name for c in r.checks]
    assert "no store leader change" in names and len(names) >= 8
    text = soak.render(r, ENV)
    assert text.count("\n| 3 |") == 2 and "Verdict:" in text
    json.dumps(soak.to_json(r, ENV), default=str)
    # A clean verdict removes the cluster dir; a failing one keeps it for the logs.
    left = list((tmp_path / "work").iterdir())
    assert (left == []) == r.passed


async def test_leader_watch_counts_became_leader_lines_written_after_it_started(
    tmp_path: Path,
) -> None:
    from k8semu.bench._clusterrun import LeaderWatch

    log = tmp_path / "controller-manager-1.log"
    log.write_text("x [info] became leader lease=kube-controller-manager\n")  # before: not counted
    async with LeaderWatch([], [], interval=0.05, log_paths={"controller-manager-1": log}) as w:
        with log.open("a") as f:
            f.write("y [warning] lease renewal timed out\n")
            f.write("z [info] became leader lease=kube-controller-manager\n")
            f.write("w [info] became lea")  # half a line: not yet
        await w.poll()
        assert w.became_leader == {"controller-manager-1": 1}
        with log.open("a") as f:
            f.write("der lease=kube-controller-manager\n")
        await w.poll()
    assert w.became_leader == {"controller-manager-1": 2}


def test_compaction_settings_the_config_does_not_know_are_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = {"store": {"snapshotCount": 5000}}
    unknown = {"store": {"noSuchCompactionKey": "1m"}}
    monkeypatch.setattr(soak, "COMPACTION_SETTINGS", (known, unknown))
    layout = soak.default_layout(SoakOptions())
    assert layout.overrides == known
    assert layout.timings == {} and layout.real_nodes == 3 and layout.addons == ("dns",)
