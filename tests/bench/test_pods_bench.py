"""`k8semu bench pods`: the cluster config it generates, the stamp placement, the command line,
and one small real run (20 pods on 5 hollow nodes) whose counts must add up."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from k8semu.bench import pods
from k8semu.bench._clusterrun import (
    ClusterLayout,
    bench_config,
    most_within,
    refine_stamps,
)
from k8semu.bench.podstartup import PodTimes
from k8semu.cluster.config import DEFAULT_APISERVER_PORT, parse_config


def _ports(doc: dict[str, object]) -> list[int]:
    text = json.dumps(doc)
    config = parse_config(text)
    out = [int(m.client_address.rpartition(":")[2]) for m in config.store.members]
    out += [int(m.peer_address.rpartition(":")[2]) for m in config.store.members]
    for spec in (config.api_server, config.scheduler, config.controller_manager):
        assert spec is not None
        out += [i.port for i in spec.instances]
    for n in config.all_nodes:
        if not n.hollow:  # a pool's kubelet listens nowhere
            out += [n.kubelet_port, n.proxy_port]
    return out


def test_generated_config_is_valid_and_uses_free_distinct_ports_and_own_ranges() -> None:
    doc = bench_config(ClusterLayout(hollow_nodes=1000, real_nodes=2), octet=77)
    ports = _ports(doc)
    assert len(ports) == len(set(ports))
    assert DEFAULT_APISERVER_PORT not in ports and 2379 not in ports
    config = parse_config(json.dumps(doc))
    ips = {n.node_ip for n in config.all_nodes}
    assert all(ip.startswith("127.0.77.") for ip in ips)
    # 1,000 hollow nodes need 1,000 pod subnets; the default cluster's ranges are not used.
    net = ipaddress.ip_network(config.network.cluster_cidr)
    assert 2 ** (config.network.node_cidr_mask_size - net.prefixlen) >= 1000
    assert not net.overlaps(ipaddress.ip_network("127.244.0.0/16"))
    assert config.network.service_cidr != "127.96.0.0/16"
    # Lease renewals stay near 25 writes/s at 1,000 nodes.
    assert config.timings.node_lease_renew_ms >= 40_000
    # Kubernetes' leader-election timings with hollow nodes; the emulator's fast ones without.
    assert config.timings.leader_elect_renew_ms == 10_000
    real = parse_config(json.dumps(bench_config(ClusterLayout(real_nodes=3), octet=78)))
    assert real.timings.leader_elect_renew_ms == 3_000


def test_hollow_pool_is_one_simulated_kubelet_without_ports() -> None:
    config = parse_config(json.dumps(bench_config(ClusterLayout(hollow_nodes=5), octet=30)))
    (pool,) = config.all_nodes
    assert pool.hollow and pool.count == 5 and pool.runtime == "simulated" and not pool.proxy
    assert pool.node_names == tuple(f"hollow-{i}" for i in range(5))


def test_whole_second_stamps_are_placed_between_the_phases_seen() -> None:
    # created (client clock) 10.3, scheduled stamp 10 (truly in [10.3, 10.6)), bind seen 10.6,
    # started stamp 10 (truly in [10.6, 11)), Running seen 11.4.
    t = PodTimes(created=10.3, scheduled=10.0, bound=10.6, started=10.0, running=11.4)
    refine_stamps([t], created_exact=True)
    assert t.created == 10.3
    assert t.scheduled == pytest.approx(10.45)
    assert t.started == pytest.approx(10.8)
    assert t.created <= t.scheduled <= t.bound <= t.started <= t.running
    # creationTimestamp (whole seconds) is placed too when it is not the client's clock.
    u = PodTimes(created=20.0, scheduled=20.0, bound=20.4, started=20.0, running=20.9)
    refine_stamps([u], created_exact=False)
    assert 20.0 <= u.created <= u.scheduled <= u.bound <= u.started <= u.running


def test_scenarios_flag() -> None:
    parser = pods.build_parser()
    assert pods.options_from(parser.parse_args([])).scenarios == ("a", "b", "c", "sts", "job")
    assert pods.options_from(parser.parse_args(["--scenario", "a,c"])).scenarios == ("a", "c")
    with pytest.raises(SystemExit):
        parser.parse_args(["--scenario", "d"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_small_run_counts_add_up(tmp_path: Path) -> None:
    opts = pods.PodsBenchOptions(
        scenarios=("a",),
        a_pods=20,
        a_nodes=5,
        a_rate=40.0,
        timeout=120.0,
        ready_timeout=120.0,
        progress=False,
    )
    result = pods.run(opts, workdir=tmp_path)
    (r,) = result.scenarios
    assert not r.error, r.error
    assert (r.created, r.bound, r.running, r.create_errors) == (20, 20, 20, 0)
    assert set(r.breakdown) == set(pods.BREAKDOWN)
    assert all(s["count"] == 20 for s in r.breakdown.values())
    s = r.breakdown["startup"]
    assert 0 < s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    split = r.client_split
    assert split["create->bind seen"]["count"] == split["bind seen->Running seen"]["count"] == 20
    assert r.pods_per_s > 0 and 1 <= r.peak_binds_per_s <= 20
    # The hollow kubelet and the control plane were sampled.
    kinds = {c["kind"] for c in r.components}
    assert {"store", "apiserver", "scheduler", "controller-manager", "kubelet"} <= kinds
    assert r.kubelet_peak_rss_mb is not None and r.kubelet_peak_rss_mb > 0
    env = {"load_average": (0.0, 0.0, 0.0), "cpus": 2, "cpu_model": "x", "date": "now"}
    table = pods.render(result, env)
    assert "| (a) 20 pods at 40/s on 5 hollow nodes | 20/20 |" in table
    json.dumps(dataclasses.asdict(result), default=str)
    # Nothing is left behind: the cluster dir is removed after a clean run.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("scenario", "size"),
    [("sts", {"sts_replicas": 4, "sts_nodes": 2}),
     ("job", {"job_completions": 12, "job_parallelism": 4, "job_nodes": 1})],
)  # fmt: skip
def test_controller_scenarios_small(scenario: str, size: dict[str, int], tmp_path: Path) -> None:
    """The StatefulSet and Job scenarios, small: every pod ready / every completion done."""
    opts = pods.PodsBenchOptions(
        scenarios=(scenario,), store_replicas=1, timeout=120.0, ready_timeout=120.0,
        progress=False, **size,  # type: ignore[arg-type]
    )  # fmt: skip
    result = pods.run(opts, workdir=tmp_path)
    (r,) = result.workloads
    assert not r.error, r.error
    assert not r.timed_out
    assert r.done == r.wanted == next(iter(size.values()))
    assert r.seconds > 0 and r.per_s > 0
    env = {"load_average": (0.0, 0.0, 0.0), "cpus": 2, "cpu_model": "x", "date": "now"}
    table = pods.render(result, env)
    assert f"| ({scenario}) " in table
    assert "startup p50" not in table  # no pod-startup tables without their scenarios
    assert list(tmp_path.iterdir()) == []


def test_most_within_a_window() -> None:
    assert most_within([], 1.0) == 0
    assert most_within([5.0, 0.0, 0.5, 1.0, 1.2, 3.0], 1.0) == 3  # 0.5, 1.0, 1.2 (or 0-1.0)
    assert most_within([0.0] * 4, 1.0) == 4
