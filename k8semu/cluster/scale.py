"""Growing and shrinking a running cluster's store, online (``k8semu store scale --replicas
N``, ``k8semu store remove NAME``): one member at a time, as etcd's runbook does it.

Growing by one member (named ``s<highest number + 1>``, on the host of the first local
replica, on free ports):

1. ``MemberAdd`` as a **learner** (it catches up without counting for the quorum, so a slow
   catch-up never costs availability), with the new peer URL;
2. the cluster's supervisor is asked to start and supervise it (``control/add-<component>``
   holding its record): the replica starts on an empty data dir with
   ``--initial-cluster-state existing`` and joins;
3. ``MemberPromote`` once its log is within 90% of the leader's (the store refuses "in sync
   with leader" until then; asked again), then this waits until it has published its name
   and applied what the leader had committed at the promotion (caught up).

Shrinking by one member, in etcd's order (remove, then stop): the member must not be the
leader (``remove`` refuses it: etcd advises moving leadership first; ``scale`` picks a
follower); the members that answer, the leaving one apart, must be a quorum of the membership
left after it (else the store would be unavailable after: refused), and with it a quorum of
the current one (else the removal cannot commit: refused). ``MemberRemove`` takes it out of
the membership while it still runs (so 2 -> 1 works: the removal needs both of two), then the
supervisor stops it for good (``control/retire-<component>``), and its data dir is moved aside
(``<name>.removed-<time>``; nothing is deleted). The removed member stops by itself once it
learns of its removal; the supervisor may restart it once before the retire request lands, and
it stops again (it finds itself removed).

After each step the cluster follows: the supervisor writes ``state.json`` (so ``k8semu
status`` and ``down`` see the new set), this writes ``cluster.json``'s member names and the
cluster config's ``store.members`` (so ``k8semu up -f CONFIG`` starts the same set again; the
file is rewritten by a YAML dump, comments lost, the first version kept as
``<config>.before-store-scale``).

A run that failed midway (a timeout) is carried on by the next one: a learner it added is
promoted, a member it removed but did not stop is stopped (and one an older version stopped
but did not remove is removed), before anything else.

Needs a detached cluster (``k8semu up --detach``: its ``k8semu supervise`` takes the new
members in) run with the ``k8semu store`` backend; refuses an even target (an even membership
tolerates no more failures than one member fewer), one below 1 or above 7 (etcd's advice).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from k8semu import pki
from k8semu.cluster import certs
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.probes import agreed_leader
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.replace import StoreMembers
from k8semu.cluster.state import ClusterState, ComponentRecord, read_state
from k8semu.cluster.supervisor import add_request_path, retire_request_path
from k8semu.pb.etcd import rpc_pb2

__all__ = ["MAX_REPLICAS", "Step", "check_target", "remove_member", "scale_store"]


MAX_REPLICAS = 7
POLL_S = 0.2
STATUS_TIMEOUT_S = 2.0
IDENTITY_FILE = "cluster.json"  # the launcher's (k8semu.cluster.launcher.IDENTITY_FILE)
NOT_IN_SYNC = "in sync with leader"
# Flags whose value differs from member to member (etcd's names); the rest is copied.
_PER_MEMBER = (
    "--name",
    "--data-dir",
    "--listen-client-urls",
    "--advertise-client-urls",
    "--listen-peer-urls",
    "--initial-advertise-peer-urls",
    "--initial-cluster",
    "--initial-cluster-state",
    "--listen-metrics-urls",
    # A TLS member's own certificate (the CA and the client-cert-auth flags are shared).
    "--cert-file",
    "--key-file",
    "--peer-cert-file",
    "--peer-key-file",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One member added or removed: its name, member id, how long the step took."""

    action: str
    name: str
    member_id: int
    seconds: float


def check_target(replicas: int) -> None:
    """Refuse a store size etcd advises against (ClusterError naming ``--replicas``)."""
    if replicas < 1:
        raise ClusterError(f"--replicas {replicas}: a store needs at least 1 member")
    if replicas > MAX_REPLICAS:
        raise ClusterError(
            f"--replicas {replicas}: at most {MAX_REPLICAS} (more members make every write"
            " slower and tolerate no failure more than etcd's advice of 5 or 7)"
        )
    if replicas % 2 == 0:
        raise ClusterError(
            f"--replicas {replicas}: an even number of members tolerates no more failures than"
            f" {replicas - 1} and needs a larger quorum; use {replicas - 1} or {replicas + 1}"
        )


def scale_store(
    state_dir: Path, replicas: int, *, timeout: float, say: Callable[[str], None]
) -> list[Step]:
    """Add or remove members one at a time until the store has ``replicas``; the steps."""
    check_target(replicas)
    deadline = time.monotonic() + timeout
    steps: list[Step] = []
    while True:
        state = _supervised(state_dir)
        done = _carry_on(state_dir, state, deadline, say)
        if done is not None:
            steps.append(done)
            continue
        have = len(state.store_members)
        if have == replicas:
            return steps
        if have < replicas:
            steps.append(_grow_one(state_dir, state, deadline, say))
        else:
            leaving = _follower_to_remove(state)
            steps.append(_shrink_one(state_dir, state, leaving, deadline, say))


def remove_member(
    state_dir: Path, name: str, *, timeout: float, say: Callable[[str], None]
) -> Step:
    """Remove member ``name`` (not the leader, not one whose leaving loses quorum)."""
    state = _supervised(state_dir)
    if _carry_on(state_dir, state, time.monotonic() + timeout, say) is not None:
        state = _supervised(state_dir)
    names = [n for n, _ in state.store_members]
    if name not in names:
        raise ClusterError(
            f"no store member {name!r} in this cluster (members: {', '.join(names)})"
        )
    return _shrink_one(state_dir, state, name, time.monotonic() + timeout, say)


def _statuses(
    state_dir: Path, members: list[tuple[str, str]]
) -> dict[str, rpc_pb2.StatusResponse | str]:
    probes = certs.probes(state_dir, [("store", a) for _, a in members])  # TLS or plain
    try:
        return probes.store_statuses(members, STATUS_TIMEOUT_S)
    finally:
        probes.close()


def _supervised(state_dir: Path) -> ClusterState:
    state = read_state(state_dir)
    if state.launcher_alive():
        raise ClusterError(
            "the cluster runs in a foreground `k8semu up`, whose supervisor cannot take new"
            " members in: run it with `k8semu up --detach` to scale its store"
        )
    if not state.supervisor_alive():
        raise ClusterError(
            f"the cluster in {state_dir} has no supervisor running (it starts and stops the"
            f" replicas); start it with `k8semu up --detach` or `k8semu supervise --state-dir"
            f" {state_dir}`"
        )
    records = [c for c in state.components if c.kind in ("store", "etcd")]
    if not records or any(c.kind != "store" for c in records):
        raise ClusterError(
            "this cluster's store is not run by `k8semu store` replicas of this host (an etcd"
            " backend or an external store): scale it with etcd's runbook (etcdctl member"
            " add/remove)"
        )
    return state


# -- growing ----------------------------------------------------------------------------------


def _grow_one(
    state_dir: Path, state: ClusterState, deadline: float, say: Callable[[str], None]
) -> Step:
    t0 = time.monotonic()
    members = StoreMembers([a for _, a in state.store_members], deadline, certs.state_probes(state))
    listed = members.call("MemberList", rpc_pb2.MemberListRequest()).members
    unstarted = [f"{m.ID:x}" for m in listed if not m.name]
    if unstarted:
        raise ClusterError(
            f"member {', '.join(unstarted)} was added but never started: remove it first"
            " (`etcdctl member remove ID`), or let it finish joining"
        )
    template = next(c for c in state.components if c.kind == "store")
    name = _next_name([m.name for m in listed])
    record = _new_record(state_dir, template, name, listed, tls=state.tls)
    peer_url = _scheme(state) + record.ports["peer"]
    added = members.call(
        "MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=[peer_url], isLearner=True)
    ).member
    say(f"added {name} as learner {added.ID:x} (client {record.address}, peer {peer_url})")
    _ask_supervisor(add_request_path(state_dir, record.name), json.dumps(asdict(record)))
    return _promote(state_dir, state, members, int(added.ID), record, t0, say)


def _promote(
    state_dir: Path,
    state: ClusterState,
    members: StoreMembers,
    member_id: int,
    record: ComponentRecord,
    t0: float,
    say: Callable[[str], None],
) -> Step:
    """Wait until the supervisor runs learner ``record``, promote it, wait until it caught
    up, and have the identity and the config follow."""
    name = record.name.removeprefix("store-")
    deadline = members.deadline
    _until(deadline, f"the supervisor started {record.name}", lambda: _alive(state_dir, record))
    members.call(
        "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=member_id), also_retry=NOT_IN_SYNC
    )
    say(f"promoted {name} to a voting member")
    after = [[n, a] for n, a in state.store_members if n != name] + [[name, record.address]]
    target: list[int] = []
    _until(deadline, f"{name} caught up", lambda: _caught_up(state_dir, after, name, target))
    _follow(state_dir, state, [n for n, _ in after], record)
    return Step("added", name, member_id, time.monotonic() - t0)


def _carry_on(
    state_dir: Path, state: ClusterState, deadline: float, say: Callable[[str], None]
) -> Step | None:
    """Finish what a failed run left half done: a learner it added (promoted now), or a
    member it stopped but did not remove (removed now). The step, or None."""
    members = StoreMembers([a for _, a in state.store_members], deadline, certs.state_probes(state))
    listed = members.call("MemberList", rpc_pb2.MemberListRequest()).members
    local = {n for n, _ in state.store_members}
    peers = {
        _scheme(state) + c.ports.get("peer", ""): c for c in state.components if c.kind == "store"
    }
    listed_urls = {u for m in listed for u in m.peerURLs}
    for url, component in peers.items():
        # Removed by a run that stopped before the supervisor stopped it: still supervised.
        gone = component.name.removeprefix("store-")
        if url not in listed_urls and gone in local and len(local) > 1:
            say(f"carrying on: stopping {gone}, removed from the store by an earlier run")
            t0 = time.monotonic()
            _retire(state_dir, state, gone, deadline, say)
            _follow(state_dir, state, sorted(local - {gone}), None)
            return Step("removed", gone, 0, time.monotonic() - t0)
    for m in listed:
        record = next((peers[u] for u in m.peerURLs if u in peers), None)
        if m.isLearner and record is not None:
            say(f"carrying on: promoting {record.name} ({m.ID:x}), added by an earlier run")
            return _promote(state_dir, state, members, int(m.ID), record, time.monotonic(), say)
        # Retired by a run that stopped before MemberRemove: no component any more, but its
        # data dir is still here (moved aside only once removed). One added by hand is not.
        retired = m.name and m.name not in local and (state_dir / "store" / m.name).is_dir()
        if record is None and retired and not m.isLearner:
            say(f"carrying on: removing {m.name} ({m.ID:x}), stopped by an earlier run")
            t0 = time.monotonic()
            members.call("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=m.ID))
            _follow(state_dir, state, sorted(local), None)
            return Step("removed", m.name, int(m.ID), time.monotonic() - t0)
    return None


def _next_name(names: list[str]) -> str:
    numbers = [int(n[1:]) for n in names if n[:1] == "s" and n[1:].isdigit()]
    return f"s{max(numbers, default=0) + 1}"


def _new_record(
    state_dir: Path, template: ComponentRecord, name: str, listed: Any, *, tls: bool = False
) -> ComponentRecord:
    """The component record of new member ``name``: ``template``'s command with this
    member's flags, on free ports of the template's host address; with `tls`, its own
    certificate from the store CA (as `up` makes one per member)."""
    ip = template.ports["client"].rpartition(":")[0]
    client_port, peer_port = _free_ports(ip, 2)
    client, peer = f"{ip}:{client_port}", f"{ip}:{peer_port}"
    data = state_dir / "store" / name
    if data.exists():  # left by an earlier member of this name: never deleted, moved aside
        data.rename(data.with_name(f"{name}.old-{time.strftime('%Y%m%dT%H%M%S')}"))
    initial = [f"{m.name}={m.peerURLs[0]}" for m in listed if m.peerURLs]
    scheme = "https" if tls else "http"
    values = {
        "--name": name,
        "--data-dir": str(data),
        "--listen-client-urls": f"{scheme}://{client}",
        "--advertise-client-urls": f"{scheme}://{client}",
        "--listen-peer-urls": f"{scheme}://{peer}",
        "--initial-advertise-peer-urls": f"{scheme}://{peer}",
        "--initial-cluster": ",".join([*initial, f"{name}={scheme}://{peer}"]),
        "--initial-cluster-state": "existing",
    }
    if tls:
        own = _member_certificate(state_dir, name, ip)
        values |= {
            "--cert-file": str(own.cert),
            "--key-file": str(own.key),
            "--peer-cert-file": str(own.cert),
            "--peer-key-file": str(own.key),
        }
    command = _without_member_flags(template.command)
    for flag, value in values.items():
        command += [flag, value]
    return ComponentRecord(
        name=f"store-{name}",
        kind="store",
        host=template.host,
        stage=template.stage,
        command=command,
        address=client,
        ports={"client": client, "peer": peer},
        log_path=str(Path(template.log_path).with_name(f"store-{name}.log")),
        data_dir=str(data),
    )


def _scheme(state: ClusterState) -> str:
    return "https://" if state.tls else "http://"


def _member_certificate(state_dir: Path, name: str, ip: str) -> pki.CertFiles:
    """Store member ``name``'s certificate, signed by the store CA (named as `up` names
    them: store-NAME, CN the member, for loopback, this host and ``ip``)."""
    hosts = tuple(dict.fromkeys(("127.0.0.1", "localhost", socket.gethostname(), ip)))
    spec = pki.CertSpec(f"store-{name}", name, hosts=hosts)
    return pki.ensure_all(certs.PKIPaths(state_dir).etcd, [spec])[spec.name]


def _without_member_flags(command: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in command:
        if skip:
            skip = False
        elif arg in _PER_MEMBER:
            skip = True
        elif arg.split("=", 1)[0] not in _PER_MEMBER:
            out.append(arg)
    return out


def _free_ports(ip: str, count: int) -> list[int]:
    if ip == "127.0.0.1":
        return free_loopback_ports(count)
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((ip, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _alive(state_dir: Path, record: ComponentRecord) -> bool:
    now = read_state(state_dir).component(record.name)
    if now is not None and now.state == "failed":
        raise ClusterError(f"{record.name} failed to start: see {record.log_path}")
    return now is not None and now.alive()


def _caught_up(state_dir: Path, members: list[list[str]], name: str, target: list[int]) -> bool:
    """``name`` answers as a voter, a quorum agrees on a leader, and it applied what the
    leader had committed when first asked (``target`` remembers it: under steady writes the
    leader's index keeps running away)."""
    statuses = _statuses(state_dir, [(n, a) for n, a in members])
    leader = agreed_leader(statuses, len(members), everyone=[name])
    mine, at_leader = statuses.get(name), statuses.get(leader or "")
    if not isinstance(mine, rpc_pb2.StatusResponse) or mine.isLearner:
        return False
    if not isinstance(at_leader, rpc_pb2.StatusResponse):
        return False
    if not target:
        target.append(at_leader.raftIndex)
    return mine.raftAppliedIndex >= target[0]


# -- shrinking --------------------------------------------------------------------------------


def _follower_to_remove(state: ClusterState) -> str:
    """The newest member that is not the leader (so the ones the config started stay)."""
    leader = _leader(state)
    for name, _ in reversed(state.store_members):
        if name != leader:
            return name
    raise ClusterError("no follower to remove")  # unreachable with two or more members


def _leader(state: ClusterState) -> str | None:
    members = [(n, a) for n, a in state.store_members]
    statuses = _statuses(Path(state.state_dir), members)
    return agreed_leader(statuses, len(members))


def _shrink_one(
    state_dir: Path, state: ClusterState, name: str, deadline: float, say: Callable[[str], None]
) -> Step:
    t0 = time.monotonic()
    members = [(n, a) for n, a in state.store_members]
    if len(members) == 1:
        raise ClusterError(f"{name} is the store's only member: a store needs at least 1")
    statuses = _statuses(state_dir, members)
    leader = agreed_leader(statuses, len(members))
    if leader == name:
        raise ClusterError(
            f"{name} is the leader: move leadership first, as etcd advises (`k8semu restart"
            f" store-{name}` hands it over on its graceful stop), then remove it"
        )
    _check_quorum(name, len(members), statuses)
    others = StoreMembers([a for n, a in members if n != name], deadline, certs.state_probes(state))
    listed = others.call("MemberList", rpc_pb2.MemberListRequest()).members
    member = next((m for m in listed if m.name == name), None)
    if member is None:
        raise ClusterError(f"{name} is not a member of the store any more (member list)")
    # etcd's order: out of the membership while it runs (its vote may be needed to commit
    # the removal: 2 -> 1), then stopped. Stopped first, a 2-member store had no quorum left.
    others.call("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=member.ID))
    say(f"removed member {name} ({member.ID:x})")
    _retire(state_dir, state, name, deadline, say)
    _follow(state_dir, state, [n for n, _ in members if n != name], None)
    return Step("removed", name, int(member.ID), time.monotonic() - t0)


def _check_quorum(name: str, size: int, statuses: dict[str, rpc_pb2.StatusResponse | str]) -> None:
    """Refuse removing ``name`` from ``size`` members when the others that answer are no
    quorum of the membership left after it, or they and ``name`` no quorum of this one."""
    answering = [n for n, s in statuses.items() if n != name and not isinstance(s, str)]
    after = (size - 1) // 2 + 1
    if len(answering) < after:
        raise ClusterError(
            f"removing {name} could lose the store's quorum: only {len(answering)} other"
            f" members answer ({', '.join(answering) or 'none'}), {after} of the {size - 1}"
            " left are needed; bring the others back first"
        )
    leaving = 0 if isinstance(statuses.get(name, "no answer"), str) else 1
    if len(answering) + leaving < size // 2 + 1:
        raise ClusterError(
            f"removing {name} cannot commit: {len(answering) + leaving} of {size} members"
            f" answer, {size // 2 + 1} are needed; bring {name} or the others back first"
        )


def _retire(
    state_dir: Path, state: ClusterState, name: str, deadline: float, say: Callable[[str], None]
) -> None:
    """Have the supervisor stop removed member ``name`` for good; move its data dir aside."""
    _ask_supervisor(retire_request_path(state_dir, f"store-{name}"), "retire")
    _until(deadline, f"the supervisor stopped store-{name}", lambda: _gone(state_dir, name))
    record = state.component(f"store-{name}")
    if record is not None and Path(record.data_dir).exists():
        data = Path(record.data_dir)
        aside = data.with_name(f"{data.name}.removed-{time.strftime('%Y%m%dT%H%M%S')}")
        data.rename(aside)
        say(f"its data dir is now {aside}")


def _gone(state_dir: Path, name: str) -> bool:
    return read_state(state_dir).component(f"store-{name}") is None


# -- the supervisor, the identity and the config ---------------------------------------------


def _ask_supervisor(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # the supervisor never reads half a request


def _until(deadline: float, what: str, check: Callable[[], bool]) -> None:
    while not check():
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out waiting until {what}")
        time.sleep(POLL_S)


def _follow(
    state_dir: Path, state: ClusterState, names: list[str], added: ComponentRecord | None
) -> None:
    """``cluster.json`` and the config file name the new set of members."""
    identity = state_dir / IDENTITY_FILE
    try:
        have = json.loads(identity.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if isinstance(have, dict):
        have["storeMembers"] = sorted(names)
        _write_atomically(identity, json.dumps(have, indent=2) + "\n")
    config = Path(state.config_source) if state.config_source else None
    if config is not None and config.is_file():
        _rewrite_config(config, state, names, added)


def _rewrite_config(
    path: Path, state: ClusterState, names: list[str], added: ComponentRecord | None
) -> None:
    """The config's ``store.members``: one entry per member in ``names`` (its fields kept
    when the config listed it, else its addresses from the state)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        return
    store = doc.setdefault("store", {})
    listed = {m.get("name"): m for m in store.get("members") or [] if isinstance(m, dict)}
    records = {c.name: c for c in [*state.components, *([added] if added else [])]}
    entries = []
    for name in names:
        record = records.get(f"store-{name}")
        if name in listed:
            entries.append(listed[name])
        elif record is not None:
            entries.append(
                {
                    "name": name,
                    "clientURL": f"http://{record.ports['client']}",
                    "peerURL": f"http://{record.ports['peer']}",
                }
            )
    store["members"] = entries
    if "replicas" in store:
        store["replicas"] = len(entries)
    keep = path.with_name(path.name + ".before-store-scale")
    if not keep.exists():
        shutil.copy2(path, keep)
    _write_atomically(path, yaml.safe_dump(doc, sort_keys=False))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
