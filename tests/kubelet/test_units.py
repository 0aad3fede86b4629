"""Unit tests of the kubelet's pure parts: env building, pod IPs, back-off, probe timing,
flag parsing, volume files, log tails and the restart rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from k8semu.kubelet import config as cfg
from k8semu.kubelet.backoff import Backoff
from k8semu.kubelet.env import (
    EnvError,
    NoCommand,
    PodFacts,
    command_line,
    container_env,
    expand,
    service_env,
)
from k8semu.kubelet.ipam import PodCIDRExhausted, PodIPAllocator
from k8semu.kubelet.podstatus import qos_class, should_restart
from k8semu.kubelet.probes import ProbeKind, ProbeTiming, ProbeTracker
from k8semu.kubelet.volumes import volume_files
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import flat_mounts

FACTS = PodFacts(pod_ip="127.244.1.5", host_ip="127.0.1.1", node_name="n1")


def _pod() -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = "web-1"
    pod.metadata.namespace = "shop"
    pod.metadata.uid = "u-1"
    pod.metadata.labels["app"] = "web"
    pod.spec.node_name = "n1"
    pod.spec.containers.add(name="main", image="nginx")
    return pod


def _svc(name: str, ns: str, ip: str, *ports: tuple[str, int, str]) -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, ns
    svc.spec.cluster_ip = ip
    for pname, port, proto in ports:
        svc.spec.ports.add(name=pname, port=port, protocol=proto)
    return svc


# ---- env ----


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A)", env) == "$(A)"  # escaped
    assert expand("$(MISSING)", env) == "$(MISSING)"  # unknown stays
    assert expand("$(A", env) == "$(A"  # unterminated stays
    assert expand("cost $5", env) == "cost $5"
    assert expand("$", env) == "$"


def test_service_env_for_the_pods_namespace_and_kubernetes() -> None:
    services = [
        _svc("redis-primary", "shop", "127.96.0.10", ("", 6379, "TCP")),
        _svc("web", "shop", "127.96.0.11", ("http", 80, "TCP"), ("dns", 53, "UDP")),
        _svc("other", "elsewhere", "127.96.0.12", ("", 1, "TCP")),
        _svc("headless", "shop", "None", ("", 2, "TCP")),
        _svc("kubernetes", "default", "127.96.0.1", ("https", 443, "TCP")),
    ]
    env = service_env(services, "shop")
    assert env["REDIS_PRIMARY_SERVICE_HOST"] == "127.96.0.10"
    assert env["REDIS_PRIMARY_SERVICE_PORT"] == "6379"
    assert env["REDIS_PRIMARY_PORT"] == "tcp://127.96.0.10:6379"
    assert env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"] == "127.96.0.10"
    assert env["WEB_SERVICE_PORT_HTTP"] == "80"
    assert env["WEB_SERVICE_PORT_DNS"] == "53"
    assert env["WEB_PORT_53_UDP"] == "udp://127.96.0.11:53"
    assert env["WEB_PORT_53_UDP_PROTO"] == "udp"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert not any(k.startswith(("OTHER_", "HEADLESS_")) for k in env)


def test_container_env_order_refs_and_expansion() -> None:
    pod = _pod()
    c = pod.spec.containers[0]
    c.env_from.add(prefix="CFG_").config_map_ref.name = "settings"
    c.env_from.add().secret_ref.name = "creds"
    for name, path in (
        ("MY_NAME", "metadata.name"),
        ("MY_NS", "metadata.namespace"),
        ("MY_IP", "status.podIP"),
        ("MY_NODE", "spec.nodeName"),
        ("MY_HOST", "status.hostIP"),
        ("MY_APP", "metadata.labels['app']"),
    ):
        c.env.add(name=name).value_from.field_ref.field_path = path
    ref = c.env.add(name="LEVEL").value_from.config_map_key_ref
    ref.name, ref.key = "settings", "level"
    sref = c.env.add(name="PASSWORD").value_from.secret_key_ref
    sref.name, sref.key = "creds", "password"
    c.env.add(name="URL", value="http://$(MY_IP):8080/$(LATER)")
    c.env.add(name="LATER", value="x")
    c.env.add(name="POD_IP", value="overridden")
    cm = core_pb2.ConfigMap(data={"level": "debug", "mode": "fast"})
    secret = core_pb2.Secret(data={"password": b"s3cret", "token": b"t"})
    env = container_env(
        pod, c, FACTS, config_maps={"settings": cm}, secrets={"creds": secret},
        services=[_svc("db", "shop", "127.96.0.9", ("", 5432, "TCP"))],
    )  # fmt: skip
    assert env["POD_NAME"] == "web-1" and env["POD_NAMESPACE"] == "shop"
    assert env["NODE_NAME"] == "n1" and env["HOSTNAME"] == "web-1"
    assert env["POD_IP"] == "overridden"  # the container's env wins
    assert env["CFG_level"] == "debug" and env["CFG_mode"] == "fast"
    assert env["token"] == "t"
    assert (env["MY_NAME"], env["MY_NS"], env["MY_IP"]) == ("web-1", "shop", "127.244.1.5")
    assert (env["MY_NODE"], env["MY_HOST"], env["MY_APP"]) == ("n1", "127.0.1.1", "web")
    assert env["LEVEL"] == "debug" and env["PASSWORD"] == "s3cret"
    assert env["URL"] == "http://127.244.1.5:8080/$(LATER)"  # only earlier variables
    assert env["DB_SERVICE_HOST"] == "127.96.0.9"


def test_missing_references_name_the_field() -> None:
    pod = _pod()
    c = pod.spec.containers[0]
    ref = c.env.add(name="X").value_from.config_map_key_ref
    ref.name, ref.key = "absent", "k"
    with pytest.raises(
        EnvError,
        match=r'spec.containers\[0\].env\[0\].valueFrom.configMapKeyRef: configmap "absent"',
    ):
        container_env(pod, c, FACTS, config_maps={}, secrets={}, where="spec.containers[0]")
    ref.optional = True
    assert container_env(pod, c, FACTS, config_maps={}, secrets={})["X"] == ""
    c2 = core_pb2.Container(name="b", image="x")
    c2.env.add(name="Y").value_from.field_ref.field_path = "spec.bogus"
    with pytest.raises(EnvError, match=r"fieldPath 'spec\.bogus': unsupported"):
        container_env(pod, c2, FACTS, config_maps={}, secrets={})
    c3 = core_pb2.Container(name="c", image="x")
    c3.env_from.add().secret_ref.name = "nope"
    with pytest.raises(EnvError, match=r'envFrom\[0\].secretRef: secret "nope" not found'):
        container_env(pod, c3, FACTS, config_maps={}, secrets={})


def test_command_line_expands_and_uses_the_image_resolver() -> None:
    c = core_pb2.Container(name="m", image="custom/app", command=["run", "--ip=$(POD_IP)"],
                           args=["$(NAME)", "$$(NAME)"])  # fmt: skip
    env = {"POD_IP": "1.2.3.4", "NAME": "n"}
    assert command_line(c, env, lambda i, cmd, a: None) == ["run", "--ip=1.2.3.4", "n", "$(NAME)"]
    seen = []

    def resolver(image: str, cmd: object, args: object) -> list[str]:
        seen.append((image, cmd, args))
        return ["builtin"]

    assert command_line(c, env, resolver) == ["builtin"]
    assert seen == [("custom/app", ["run", "--ip=1.2.3.4"], ["n", "$(NAME)"])]
    bare = core_pb2.Container(name="m", image="unknown/thing", args=["a"])
    with pytest.raises(NoCommand, match="image unknown/thing is not a built-in image and the"
                       " container has no command"):  # fmt: skip
        command_line(bare, env, lambda i, cmd, a: None)


# ---- pod IPs ----


def test_pod_ips_skip_network_gateway_broadcast_and_reuse_last() -> None:
    alloc = PodIPAllocator("127.244.3.0/29")  # .0 net, .1 gateway, .7 broadcast: .2-.6
    ips = [alloc.allocate(f"p{i}") for i in range(5)]
    assert ips == [f"127.244.3.{i}" for i in range(2, 7)]
    assert alloc.allocate("p0") == "127.244.3.2"  # idempotent per pod
    with pytest.raises(PodCIDRExhausted):
        alloc.allocate("p5")
    alloc.release("p1")
    alloc.release("p3")
    # Freed addresses come back, round-robin: the one freed last is not first.
    assert alloc.allocate("q1") == "127.244.3.3"
    assert alloc.allocate("q2") == "127.244.3.5"
    assert alloc.get("q2") == "127.244.3.5"


def test_pod_ip_reserve_after_restart() -> None:
    alloc = PodIPAllocator("127.244.3.0/24")
    assert alloc.reserve("a", "127.244.3.9")
    assert not alloc.reserve("b", "127.244.3.9")  # someone else's
    assert not alloc.reserve("b", "127.244.3.1")  # the gateway
    assert not alloc.reserve("b", "10.0.0.1")  # outside
    assert alloc.allocate("a") == "127.244.3.9"
    assert alloc.allocate("b") != "127.244.3.9"


# ---- back-off and restarts ----


def test_backoff_doubles_to_the_maximum_and_resets_after_a_long_run() -> None:
    b = Backoff(initial=1, maximum=20)
    assert [b.next_delay(0.1) for _ in range(7)] == [1, 2, 4, 8, 16, 20, 20]
    assert b.next_delay(40.0) == 1  # ran for 2x the maximum: start over
    assert b.next_delay(0.0) == 2
    with pytest.raises(ValueError):
        Backoff(initial=0, maximum=1)


def test_restart_policy() -> None:
    assert should_restart("Always", 0, init=False)
    assert should_restart("Always", 1, init=False)
    assert not should_restart("OnFailure", 0, init=False)
    assert should_restart("OnFailure", 2, init=False)
    assert not should_restart("Never", 2, init=False)
    # Init containers re-run only after a failure, and never under Never.
    assert not should_restart("Always", 0, init=True)
    assert should_restart("Always", 1, init=True)
    assert not should_restart("Never", 1, init=True)


def test_qos_class() -> None:
    pod = _pod()
    assert qos_class(pod) == "BestEffort"
    res = pod.spec.containers[0].resources
    res.requests["cpu"] = "100m"
    assert qos_class(pod) == "Burstable"
    res.limits.update({"cpu": "100m", "memory": "64Mi"})
    res.requests["memory"] = "64Mi"
    assert qos_class(pod) == "Guaranteed"


# ---- probes ----


def test_probe_timing_defaults_and_schedule() -> None:
    t = ProbeTiming.of(core_pb2.Probe(), ProbeKind.READINESS)
    assert (t.initial_delay, t.period, t.timeout) == (0, 10, 1)
    assert (t.success_threshold, t.failure_threshold) == (1, 3)
    p = core_pb2.Probe(initial_delay_seconds=5, period_seconds=2, success_threshold=3)
    assert ProbeTiming.of(p, ProbeKind.LIVENESS).success_threshold == 1  # forced for liveness
    times = ProbeTiming.of(p, ProbeKind.READINESS).probe_times(100.0)
    assert [times(n) for n in range(3)] == [105.0, 107.0, 109.0]


def test_probe_thresholds() -> None:
    timing = ProbeTiming(initial_delay=0, period=1, timeout=1, success_threshold=2,
                         failure_threshold=3)  # fmt: skip
    ready = ProbeTracker(ProbeKind.READINESS, timing)
    assert ready.result is False  # not ready before any success
    assert ready.observe(True) is False  # 1 of 2
    assert ready.observe(True) is True
    assert ready.observe(False) is True and ready.observe(False) is True
    assert ready.observe(True) is True  # the failure streak is broken
    assert [ready.observe(False) for _ in range(3)] == [True, True, False]
    live = ProbeTracker(ProbeKind.LIVENESS, timing)
    assert live.result is True  # alive until proven otherwise
    assert [live.observe(False) for _ in range(3)] == [True, True, False]
    assert live.failing
    startup = ProbeTracker(ProbeKind.STARTUP, timing)
    assert startup.result is False and not startup.failing


# ---- flags ----


def test_flag_parsing_and_errors() -> None:
    cap = cfg.parse_resources("cpu=4,memory=8Gi,pods=110")
    assert cfg.allocatable(cap, cfg.parse_resources("cpu=500m,memory=1Gi", flag="--reserved")) == {
        "cpu": "3500m", "memory": "7Gi", "pods": "110",
    }  # fmt: skip
    assert cfg.allocatable({"cpu": "1"}, {"cpu": "2"}) == {"cpu": "0"}
    with pytest.raises(cfg.ConfigError, match="--capacity: memory"):
        cfg.parse_resources("memory=lots")
    with pytest.raises(cfg.ConfigError, match="expected KEY=VALUE"):
        cfg.parse_labels("zone")
    taints = cfg.parse_taints("a=b:NoSchedule,c:NoExecute")
    assert [(t.key, t.value, t.effect) for t in taints] == [
        ("a", "b", "NoSchedule"), ("c", "", "NoExecute"),
    ]  # fmt: skip
    with pytest.raises(cfg.ConfigError, match="effect 'Sometimes' must be one of"):
        cfg.parse_taints("a=b:Sometimes")
    with pytest.raises(cfg.ConfigError, match="--node-lease-renew-interval"):
        cfg.KubeletConfig(node_name="n", lease_duration=1, lease_renew_interval=2)
    with pytest.raises(cfg.ConfigError, match="--node-ip: 'x': not an IP"):
        cfg.KubeletConfig(node_name="n", node_ip="x")
    with pytest.raises(cfg.ConfigError, match="--pod-cidr"):
        cfg.KubeletConfig(node_name="n", pod_cidr="127.244.0.0/33")
    assert cfg.KubeletConfig(node_name="n").effective_listen_address == "127.0.0.1:10250"


def test_kubelet_cli_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from k8semu.cli import kubelet as cli

    assert cli.main(["--node-name", "n", "--capacity", "cpu=four"]) == 2
    assert "--capacity: cpu" in capsys.readouterr().err
    assert cli.main(["--count", "3", "--node-name", "h"]) == 2
    assert "--count (a pool of hollow nodes) needs --runtime simulated" in capsys.readouterr().err
    assert cli.main(["--node-name", "n", "--reserved", "gpu=1"]) == 2
    assert "--reserved: gpu: not in --capacity" in capsys.readouterr().err
    assert cli.main(["--node-name", "n", "--sync-frequency", "0s"]) == 2
    assert "--sync-frequency: must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own error for a duration it cannot read
        cli.main(["--node-name", "n", "--sync-frequency", "often"])
    assert "--sync-frequency" in capsys.readouterr().err


# ---- volumes and logs ----


def test_volume_files() -> None:
    pod = _pod()
    vol = pod.spec.volumes.add(name="cfg")
    vol.config_map.name = "settings"
    sec = pod.spec.volumes.add(name="sec")
    sec.secret.secret_name = "creds"
    sec.secret.items.add(key="password", path="pw.txt", mode=0o400)
    pod.spec.volumes.add(name="scratch").empty_dir.SetInParent()
    c = pod.spec.containers[0]
    c.volume_mounts.add(name="cfg", mount_path="/etc/app")
    c.volume_mounts.add(name="sec", mount_path="/secrets")
    c.volume_mounts.add(name="scratch", mount_path="/tmp/work")
    files = flat_mounts(volume_files(
        pod, c,
        config_maps={"settings": core_pb2.ConfigMap(data={"a.conf": "x=1"})},
        secrets={"creds": core_pb2.Secret(data={"password": b"pw", "user": b"u"})},
    ))  # fmt: skip
    got = {(f.path, f.data, f.mode) for f in files}
    assert ("/etc/app/a.conf", b"x=1", 0o644) in got
    assert ("/secrets/pw.txt", b"pw", 0o400) in got
    assert ("/tmp/work/", b"", 0o644) in got
    assert not any("user" in f.path for f in files)  # items select keys
    with pytest.raises(EnvError, match=r'volumeMounts\[0\]: volume \'cfg\': configmap "settings"'):
        volume_files(pod, c, config_maps={}, secrets={})
    vol.config_map.optional = True
    secrets = {"creds": core_pb2.Secret(data={"password": b"p"})}
    assert ("/etc/app/", b"", 0o644) in {
        (f.path, f.data, f.mode)
        for f in flat_mounts(
            volume_files(
                pod, c, config_maps={}, secrets={"creds": core_pb2.Secret(data={"password": b"p"})}
            )
        )
    }
    c.volume_mounts.add(name="ghost", mount_path="/g")
    with pytest.raises(EnvError, match=r"volumeMounts\[3\].name: volume 'ghost' not found"):
        volume_files(pod, c, config_maps={}, secrets=secrets, where="spec.containers[0]")


# ---- the node agent's choice of pod IPs ----


async def test_pod_ip_source_node_cidr_flag_fallback_and_host_network() -> None:
    from typing import Any, cast

    from k8semu.kubelet.node import NodeAgent
    from k8semu.kubelet.simulated import SimulatedRuntime

    def agent(**kw: Any) -> NodeAgent:
        config = cfg.KubeletConfig(node_name="n1", node_ip="127.0.1.7", **kw)
        return NodeAgent(config, cast(Any, None), SimulatedRuntime())

    pod = _pod()
    a = agent(pod_cidr="127.244.9.0/24", pod_cidr_wait=0)
    assert await a.pod_ip_for(pod, "") == "127.244.9.2"  # the flag, no podCIDR on the node
    pod.spec.host_network = True
    assert await a.pod_ip_for(pod, "") == "127.0.1.7"
    pod.spec.host_network = False
    assert await agent(pod_cidr_wait=0).pod_ip_for(pod, "") == "127.0.0.1"  # fallback
    # The node's podCIDR wins, and arrives while a pod waits for it.
    b = agent(pod_cidr="127.244.9.0/24", pod_cidr_wait=30)
    waiting = asyncio.ensure_future(b.pod_ip_for(pod, ""))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    node = core_pb2.Node()
    node.spec.pod_cidr = "127.244.5.0/24"
    b.set_node(node)
    assert await asyncio.wait_for(waiting, 5) == "127.244.5.2"
    # After a restart, a pod keeps the IP it had.
    other = _pod()
    other.metadata.uid = "u-2"
    assert await b.pod_ip_for(other, "127.244.5.40") == "127.244.5.40"
    b.release_ip("u-2")
    other.status.pod_ip = "127.244.5.41"
    assert await b.pod_ip_for(other, "") == "127.244.5.41"


def test_memory_limit_wrapper_execs_in_place(tmp_path: Path) -> None:
    import subprocess

    from k8semu.kubelet.process import with_memory_limit

    assert with_memory_limit(["a", "b"], None) == ["a", "b"]
    argv = with_memory_limit(["sh", "-c", 'ulimit -v; echo "$0" "$@"', "x", "y z"], 64 << 20)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.splitlines() == ["65536", "x y z"]


@pytest.mark.parametrize(
    ("policy", "host_network", "want"),
    [
        ("", False, True),
        ("ClusterFirst", False, True),
        ("Default", False, False),
        ("ClusterFirst", True, False),
        ("ClusterFirstWithHostNet", True, True),
    ],
)
def test_cluster_dns_in_the_environment_follows_dns_policy(
    policy: str, host_network: bool, want: bool
) -> None:
    from dataclasses import replace

    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = "p", "shop"
    pod.spec.dns_policy = policy
    pod.spec.host_network = host_network
    container = pod.spec.containers.add(name="c", image="busybox")
    facts = replace(FACTS, dns_server="127.96.0.10")
    env = container_env(pod, container, facts, config_maps={}, secrets={})
    if want:
        assert env["K8SEMU_DNS_SERVER"] == "127.96.0.10:53"
        assert env["K8SEMU_DNS_SEARCH"] == "shop.svc.cluster.local svc.cluster.local cluster.local"
    else:
        assert "K8SEMU_DNS_SERVER" not in env
    assert "K8SEMU_DNS_SERVER" not in container_env(
        pod, container, FACTS, config_maps={}, secrets={}
    )  # no --cluster-dns: nothing


def test_kubelet_cli_names_a_pool_of_one_as_the_cluster_config_does() -> None:
    """`hollowNodes: [{name: h, count: 1}]` registers h-0 (the launcher waits for that name):
    --count makes a pool whatever its size; without it the node keeps its own name."""
    from k8semu.cli import kubelet as cli

    def names(*argv: str) -> list[str]:
        ns = cli._parser().parse_args(["--node-name", "h", *argv])
        return [c.node_name for c in cli.build_configs(ns)]

    assert names("--runtime", "simulated", "--count", "1") == ["h-0"]
    assert names("--runtime", "simulated", "--count", "3") == ["h-0", "h-1", "h-2"]
    assert names("--runtime", "simulated") == ["h"]
    assert names() == ["h"]
