"""Run etcdctl (API v3) against a store cluster and turn what it prints into a transcript.

This module owns three things:

* :class:`Etcdctl` runs the ``etcdctl`` binary against one cluster's endpoints, and
  :class:`Session` records every invocation of a scripted run as a :class:`Step` (argv,
  stdin, exit code, stdout, stderr) and learns the lease ids the cluster granted, so a script
  can use them in later commands;
* :class:`EtcdctlProcess` is an etcdctl that outlives one call (``watch``, ``watch -i``): its
  output is collected as it arrives, and the test ends it, by pid, when it has seen enough;
* :class:`Normalizer` removes from a transcript only what legitimately differs between two
  clusters that ran the same script: cluster and member ids, lease ids, client and peer URLs,
  raft term and index, db sizes, the server version string, KV hash values, the remaining TTL
  of a lease, timings, and the timestamps and client UUIDs of etcdctl's own log lines. Where
  the order of lines depends on those (member lists are sorted by member id, health checks
  print in completion order, which row is the leader) or is random in etcd itself (lease
  lists, a lease's attached keys) the records are sorted after masking: always for a lease's
  keys, and for the whole output of a step marked ``unordered``. Keys, values, revisions,
  versions, counts, error texts and exit codes are left exactly as printed, so a difference in
  any of them shows.

It must not send traffic anywhere but the endpoints it is given (the cluster harness only hands
out 127.0.0.1), nor signal a process it did not start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc  # type: ignore[import-untyped, unused-ignore]

from k8semu.cluster.processes import ProcessCluster
from k8semu.cluster.spawn import SCRUBBED_ENV
from k8semu.pb.etcd import rpc_pb2

__all__ = [
    "DEFAULT_ETCDCTL_BINARY",
    "Etcdctl",
    "EtcdctlProcess",
    "Identity",
    "Normalizer",
    "Session",
    "Step",
]

DEFAULT_ETCDCTL_BINARY = "/usr/bin/etcdctl"
# etcdctl's own deadline for one request; generous, so a slow CI host shows a real error
# rather than "context deadline exceeded".
DEFAULT_COMMAND_TIMEOUT = "30s"
DEFAULT_DIAL_TIMEOUT = "5s"
# How long one etcdctl invocation may run before the harness kills it and records that.
DEFAULT_STEP_TIMEOUT_S = 60.0
STOP_GRACE_S = 2.0
# Longer stdin is shown in a transcript by its size only.
MAX_SHOWN_STDIN = 4096


@dataclass(frozen=True)
class Step:
    """One recorded etcdctl invocation.

    ``returncode`` is None when the process did not exit by itself: ``note`` then says why
    (killed after a timeout, or stopped by the test once it had printed what was expected).
    ``unordered`` asks the normalizer to sort the step's records (lines, table rows, JSON
    array elements) after masking, for outputs whose order depends on masked values;
    ``anonymous`` to mask client URLs without the member's name, for outputs where which
    member a row belongs to is itself a masked difference (the leader's row).
    """

    args: tuple[str, ...]
    stdin: str | None
    returncode: int | None
    stdout: str
    stderr: str
    note: str = ""
    unordered: bool = False
    anonymous: bool = False

    def render(self) -> list[str]:
        """The step as transcript lines: ``$`` command, ``<`` stdin, stdout, ``!`` stderr."""
        lines = ["$ etcdctl " + shlex.join(self.args)]
        if self.stdin is not None:
            if len(self.stdin) > MAX_SHOWN_STDIN:
                lines.append(f"< ({len(self.stdin)} characters)")
            else:
                lines.extend("< " + line for line in self.stdin.splitlines())
        lines.extend(self.stdout.splitlines())
        lines.extend("! " + line for line in self.stderr.splitlines())
        if self.returncode is None:
            lines.append(f"= {self.note or 'no exit status'}")
        else:
            lines.append(f"= exit {self.returncode}")
        return lines


@dataclass(frozen=True)
class Identity:
    """What names one cluster: its id, and per member name the member id and URLs."""

    cluster_id: int
    member_ids: Mapping[str, int]
    client_urls: Mapping[str, str]
    peer_urls: Mapping[str, str]

    @classmethod
    def of(cls, cluster: ProcessCluster, timeout: float = 30.0) -> Identity:
        """Ask every member of ``cluster`` for its ids (``Maintenance.Status``).

        Polls until every member has answered with a member id and all agree on the cluster
        id; raises TimeoutError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while True:
            last = cluster.statuses()
            answers = {name: s for name, s in last.items() if isinstance(s, rpc_pb2.StatusResponse)}
            cluster_ids = {s.header.cluster_id for s in answers.values()}
            if (
                set(answers) == set(cluster.members)
                and all(s.header.member_id for s in answers.values())
                and len(cluster_ids) == 1
                and 0 not in cluster_ids
            ):
                return cls(
                    cluster_id=cluster_ids.pop(),
                    member_ids={n: answers[n].header.member_id for n in cluster.members},
                    client_urls={n: m.client_url for n, m in cluster.members.items()},
                    peer_urls={n: m.peer_url for n, m in cluster.members.items()},
                )
            if time.monotonic() >= deadline:
                described = {
                    n: (s.code().name if isinstance(s, grpc.RpcError) else type(s).__name__)
                    for n, s in last.items()
                }
                raise TimeoutError(f"{cluster.kind}: members did not all answer: {described}")
            time.sleep(0.05)


def _environment() -> dict[str, str]:
    # ETCDCTL_* variables from the caller would override or conflict with our flags.
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in SCRUBBED_ENV and not k.startswith("ETCDCTL")
    }
    env["ETCDCTL_API"] = "3"
    return env


class Etcdctl:
    """Runs the etcdctl binary against fixed endpoints with generous timeouts."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        binary: str = DEFAULT_ETCDCTL_BINARY,
        command_timeout: str = DEFAULT_COMMAND_TIMEOUT,
        dial_timeout: str = DEFAULT_DIAL_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise ValueError("etcdctl needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.binary = binary
        self.command_timeout = command_timeout
        self.dial_timeout = dial_timeout

    @staticmethod
    def available(binary: str = DEFAULT_ETCDCTL_BINARY) -> bool:
        """Whether an etcdctl binary is installed at ``binary``."""
        return os.access(binary, os.X_OK)

    def argv(self, args: Sequence[str], endpoints: Sequence[str] | None = None) -> list[str]:
        """The full command line: the binary, the global flags, then ``args``."""
        return [
            self.binary,
            "--endpoints=" + ",".join(endpoints or self.endpoints),
            "--command-timeout=" + self.command_timeout,
            "--dial-timeout=" + self.dial_timeout,
            *args,
        ]

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        endpoints: Sequence[str] | None = None,
        cwd: Path | None = None,
        timeout: float = DEFAULT_STEP_TIMEOUT_S,
        unordered: bool = False,
        anonymous: bool = False,
    ) -> Step:
        """Run one etcdctl command to completion (or kill it after ``timeout`` s)."""
        try:
            done = subprocess.run(
                self.argv(args, endpoints),
                input=b"" if stdin is None else stdin.encode(),
                capture_output=True,
                env=_environment(),
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            # subprocess.run has killed (by pid) and reaped the child already.
            return Step(
                args=tuple(args),
                stdin=stdin,
                returncode=None,
                stdout=_text(exc.stdout),
                stderr=_text(exc.stderr),
                note=f"killed after {timeout:g} s without exiting",
                unordered=unordered,
                anonymous=anonymous,
            )
        return Step(
            args=tuple(args),
            stdin=stdin,
            returncode=done.returncode,
            stdout=_text(done.stdout),
            stderr=_text(done.stderr),
            unordered=unordered,
            anonymous=anonymous,
        )

    def start(
        self, *args: str, endpoints: Sequence[str] | None = None, interactive: bool = False
    ) -> EtcdctlProcess:
        """Start etcdctl in the background; ``interactive`` gives it a stdin pipe."""
        return EtcdctlProcess(
            tuple(args), self.argv(args, endpoints), _environment(), interactive=interactive
        )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", "replace")


class EtcdctlProcess:
    """A background etcdctl whose stdout and stderr are collected as they arrive.

    The test decides when it has seen enough (:meth:`wait_for`) and then ends it
    (:meth:`stop`, SIGTERM then SIGKILL to the pid it started) or lets it exit by itself
    (:meth:`close_stdin` for ``watch -i``). Leaving the ``with`` block always stops it.
    """

    def __init__(
        self, args: tuple[str, ...], argv: list[str], env: dict[str, str], *, interactive: bool
    ) -> None:
        self.args = args
        self._sent: list[str] = []
        self._out: list[str] = []
        self._err: list[str] = []
        self._changed = threading.Condition()
        self._stopped_by_us = False
        if threading.current_thread() is threading.main_thread():
            # Dies with the test process even if neither stop() nor the with block runs.
            setpriv = shutil.which("setpriv")
            if setpriv is not None:
                argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream: Iterable[bytes], sink: list[str]) -> None:
        for raw in stream:
            with self._changed:
                sink.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        """Everything the process has printed on stdout so far."""
        with self._changed:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        """Everything the process has printed on stderr so far."""
        with self._changed:
            return "".join(self._err)

    def send(self, line: str) -> None:
        """Write one line to the process's stdin (``watch -i``)."""
        if self.proc.stdin is None:
            raise RuntimeError("this etcdctl was not started interactive")
        self._sent.append(line)
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        """Close stdin: an interactive watch then exits by itself."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """Wait until ``predicate(stdout so far)`` holds; False on timeout or exit first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if predicate("".join(self._out)):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.proc.poll() is not None and not any(t.is_alive() for t in self._readers)
                ):
                    return False
                self._changed.wait(min(remaining, 0.1))

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the process to exit by itself; its exit code or None."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """End the process if it still runs (SIGTERM, then SIGKILL after ``grace`` s)."""
        self.close_stdin()
        if self.proc.poll() is None:
            self._stopped_by_us = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        for t in self._readers:
            t.join(timeout=grace)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not any(t.is_alive() for t in self._readers):
                stream.close()

    def step(self) -> Step:
        """The process as a transcript step; it must have ended (see :meth:`stop`)."""
        if self.proc.poll() is None:
            raise RuntimeError("step() of an etcdctl that is still running; stop() it first")
        for t in self._readers:
            t.join(timeout=STOP_GRACE_S)
        stdin = "".join(line + "\n" for line in self._sent) if self._sent else None
        if self._stopped_by_us:
            return Step(self.args, stdin, None, self.stdout, self.stderr, "stopped by the test")
        return Step(self.args, stdin, self.proc.returncode, self.stdout, self.stderr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_LEASE_GRANTED = re.compile(r"^lease ([0-9a-f]{16}) granted with TTL\(", re.MULTILINE)
_LEASE_GRANTED_JSON = re.compile(r'"ID":(\d+),"TTL":')


@dataclass
class Session:
    """One scripted etcdctl run against one cluster: its steps, in order, and its leases.

    A script is a function of a Session; running the same function on two clusters gives two
    transcripts that :class:`Normalizer` makes comparable. ``leases`` are the ids granted by
    ``lease grant`` steps, in order, so a script can refer to "the first lease" on either
    cluster (:meth:`lease`).
    """

    etcdctl: Etcdctl
    identity: Identity
    name: str
    steps: list[Step] = field(default_factory=list)
    leases: list[int] = field(default_factory=list)

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        endpoints: Sequence[str] | None = None,
        cwd: Path | None = None,
        timeout: float = DEFAULT_STEP_TIMEOUT_S,
        unordered: bool = False,
        anonymous: bool = False,
        record: bool = True,
    ) -> Step:
        """Run one command; record it unless ``record`` is false (polling, setup)."""
        step = self.etcdctl.run(
            *args,
            stdin=stdin,
            endpoints=endpoints,
            cwd=cwd,
            timeout=timeout,
            unordered=unordered,
            anonymous=anonymous,
        )
        self.learn_leases(step)
        if record:
            self.steps.append(step)
        return step

    def add(self, step: Step) -> None:
        """Record a step made elsewhere (a background process that has ended)."""
        self.learn_leases(step)
        self.steps.append(step)

    def learn_leases(self, step: Step) -> None:
        """Remember the ids that a ``lease grant`` step printed."""
        if step.args[:2] != ("lease", "grant"):
            return
        found = [int(h, 16) for h in _LEASE_GRANTED.findall(step.stdout)]
        found += [int(d) for d in _LEASE_GRANTED_JSON.findall(step.stdout)]
        self.leases.extend(i for i in found if i not in self.leases)

    def lease(self, n: int) -> str:
        """The ``n``-th lease this session was granted, in etcdctl's hex form."""
        if n >= len(self.leases):
            raise LookupError(
                f"{self.name}: script wants lease #{n} but only {len(self.leases)} were granted"
            )
        return f"{self.leases[n]:x}"

    def transcript(self, normalizer: Normalizer | None = None) -> list[str]:
        """All steps as lines, normalized when a normalizer is given."""
        out: list[str] = []
        for step in self.steps:
            out.extend(normalizer.step(step) if normalizer else step.render())
        return out


# Keys (JSON) and field names (``-w fields``) whose values legitimately differ between two
# implementations running the same script, with why.
_MASKED_KEYS: Mapping[str, str] = {
    # Raft bookkeeping: etcd's first term and its configuration entries are its own.
    "raft_term": "<term>",
    "raftTerm": "<term>",
    "RaftTerm": "<term>",
    "raftIndex": "<index>",
    "RaftIndex": "<index>",
    "raftAppliedIndex": "<index>",
    "RaftAppliedIndex": "<index>",
    # Storage engine sizes (bbolt pages vs SQLite pages).
    "dbSize": "<db-size>",
    "DBSize": "<db-size>",
    "dbSizeInUse": "<db-size>",
    "DBSizeInUse": "<db-size>",
    # HashKV hashes the engine's own key encoding; equality across members is checked apart.
    "hash": "<hash>",
    "Hash": "<hash>",
    # Timings and log timestamps.
    "took": "<duration>",
    "ts": "<timestamp>",
    # Snapshot logs: sizes of the (different by design) snapshot formats.
    "size": "<size>",
}
# Keys masked only when their value is a string: the server's version ("3.4.0" vs "3.4.23");
# a key's integer "version" is data and stays.
_MASKED_STRING_KEYS: Mapping[str, str] = {
    "version": "<server-version>",
    "Version": "<server-version>",
}
# The remaining TTL of a lease is timing (etcd truncates, so it prints 99 s for a 100 s lease
# a moment after the grant); only ``lease timetolive`` prints it.
_TIMETOLIVE_KEYS: Mapping[str, str] = {"ttl": "<remaining>", "TTL": "<remaining>"}

# Table columns with the same meaning as the keys above.
_MASKED_COLUMNS: Mapping[str, str] = {
    "VERSION": "<server-version>",
    "DB SIZE": "<db-size>",
    "RAFT TERM": "<term>",
    "RAFT INDEX": "<index>",
    "RAFT APPLIED INDEX": "<index>",
    "HASH": "<hash>",
    "TOOK": "<duration>",
}
# ``endpoint status`` in the simple format: endpoint, id, version, db size, is leader,
# is learner, raft term, raft index, raft applied index, errors.
_STATUS_SIMPLE_COLUMNS: Mapping[int, str] = {
    2: "<server-version>",
    3: "<db-size>",
    6: "<term>",
    7: "<index>",
    8: "<index>",
}

_FIELDS_LINE = re.compile(r'^"(?P<key>[A-Za-z]+)" : (?P<value>.*)$')
_CLIENT_UUID = re.compile(r"client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOOK_TEXT = re.compile(r"took = [0-9.]+[a-zµ]+")
_REMAINING_TEXT = re.compile(r"remaining\(-?\d+s\)")
_ATTACHED_KEYS = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_HASHKV_SIMPLE = re.compile(r"^(?P<ep>\S+), \d+$")


class Normalizer:
    """Masks what legitimately differs between clusters in one cluster's transcript.

    Identity values are replaced by what they stand for, found by exact value rather than by
    shape, so a wrong id (a member id that is no member's, a lease id that was never granted)
    is left as printed and shows up in the comparison:

    * the cluster id -> ``<cluster-id>``; any member id -> ``<member-id>`` (which member
      answers a request is the client balancer's choice);
    * the n-th granted lease -> ``<lease-n>`` (decimal, hex and zero-padded hex forms);
    * a member's client URL/endpoint -> ``<client-url:s1>``/``<endpoint:s1>``, its peer URL
      -> ``<peer-url:s1>``; in an ``anonymous`` step the client forms lose the member name
      (``<client-url>``, ``<endpoint>``), because there the leader's row differs.
    """

    def __init__(self, identity: Identity, leases: Sequence[int]) -> None:
        self.identity = identity
        # Longest first, so a URL is replaced before the endpoint inside it.
        ids: list[tuple[str, str]] = [
            (str(identity.cluster_id), "<cluster-id>"),
            (f"{identity.cluster_id:x}", "<cluster-id>"),
            (f"{identity.cluster_id:016x}", "<cluster-id>"),
        ]
        for member_id in identity.member_ids.values():
            ids += [
                (str(member_id), "<member-id>"),
                (f"{member_id:x}", "<member-id>"),
                (f"{member_id:016x}", "<member-id>"),
            ]
        for n, lease_id in enumerate(leases, 1):
            ids += [
                (str(lease_id), f"<lease-{n}>"),
                (f"{lease_id:x}", f"<lease-{n}>"),
                (f"{lease_id:016x}", f"<lease-{n}>"),
            ]
        self._ids = dict(sorted(set(ids), key=lambda kv: -len(kv[0])))
        self._ids_re = re.compile(
            r"(?<![0-9A-Za-z])(" + "|".join(re.escape(k) for k in self._ids) + r")(?![0-9A-Za-z])"
        )
        self._urls: dict[bool, list[tuple[str, str]]] = {False: [], True: []}
        for name, url in identity.client_urls.items():
            endpoint = url.removeprefix("http://")
            self._urls[False] += [(url, f"<client-url:{name}>"), (endpoint, f"<endpoint:{name}>")]
            self._urls[True] += [(url, "<client-url>"), (endpoint, "<endpoint>")]
        for name, url in identity.peer_urls.items():
            for anonymous in (False, True):
                self._urls[anonymous].insert(0, (url, f"<peer-url:{name}>"))

    # -- scalars ------------------------------------------------------------------------------

    def text(self, s: str, *, anonymous: bool = False) -> str:
        """Mask identities, URLs, client UUIDs and timings inside free text."""
        for url, token in self._urls[anonymous]:
            s = re.sub(re.escape(url) + r"(?![0-9])", token, s)
        s = self._ids_re.sub(lambda m: self._ids[m.group(1)], s)
        s = _CLIENT_UUID.sub("client-<uuid>", s)
        s = _TOOK_TEXT.sub("took = <duration>", s)
        return s

    def _json(self, value: object, key: str, *, anonymous: bool, timetolive: bool) -> object:
        if key in _MASKED_KEYS:
            return _MASKED_KEYS[key]
        if timetolive and key in _TIMETOLIVE_KEYS:
            return _TIMETOLIVE_KEYS[key]
        if timetolive and key == "keys" and isinstance(value, list):
            return sorted(self.text(str(v), anonymous=anonymous) for v in value)
        if isinstance(value, str) and key in _MASKED_STRING_KEYS:
            return _MASKED_STRING_KEYS[key]
        if isinstance(value, dict):
            masked: dict[str, object] = {
                k: self._json(v, k, anonymous=anonymous, timetolive=timetolive)
                for k, v in value.items()
            }
            if key == "HashKV" and "hash" not in masked:
                # A hash of 0 is a hash like any other, but proto3 JSON leaves it out.
                masked = {"header": masked.pop("header", {}), "hash": _MASKED_KEYS["hash"]} | masked
            return masked
        if isinstance(value, list):
            return [self._json(v, key, anonymous=anonymous, timetolive=timetolive) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            text = self.text(str(value), anonymous=anonymous)
            return value if text == str(value) else text
        if isinstance(value, str):
            return self.text(value, anonymous=anonymous)
        return value

    # -- lines --------------------------------------------------------------------------------

    def json_line(self, line: str, *, anonymous: bool, timetolive: bool, unordered: bool) -> str:
        """Mask one line of JSON by key and value; ValueError if it is not JSON."""
        value = json.loads(line)
        masked = self._json(value, "", anonymous=anonymous, timetolive=timetolive)
        if unordered:
            masked = _sorted_json(masked)
        return json.dumps(masked, separators=(",", ":"), ensure_ascii=False)

    def step(self, step: Step) -> list[str]:
        """The step's transcript lines with everything legitimately different masked."""
        anonymous = step.anonymous
        timetolive = step.args[:2] == ("lease", "timetolive")
        status = step.args[:2] == ("endpoint", "status")
        hashkv = step.args[:2] == ("endpoint", "hashkv")
        command = self.text(step.render()[0], anonymous=anonymous)
        stdin = [
            self.text(line, anonymous=anonymous)
            for line in step.render()[1:]
            if line.startswith("< ")
        ]
        out = [
            self._line(line, anonymous=anonymous, timetolive=timetolive, unordered=step.unordered)
            for line in step.stdout.splitlines()
        ]
        out = _mask_tables(out)
        if status:
            out = [_mask_status_simple(line) for line in out]
        if hashkv:
            out = [_HASHKV_SIMPLE.sub(r"\g<ep>, <hash>", line) for line in out]
        if timetolive:
            out = _sorted_lease_keys(out)
        if step.unordered:
            out = _sorted_records(out)
        err = [
            self._line(line, anonymous=anonymous, timetolive=timetolive, unordered=False)
            for line in step.stderr.splitlines()
        ]
        if step.unordered:
            # `endpoint health` prints its verdicts on stderr, in completion order.
            err = sorted(err)
        err = ["! " + line for line in err]
        tail = step.render()[-1]
        return [command, *stdin, *out, *err, tail]

    def _line(self, line: str, *, anonymous: bool, timetolive: bool, unordered: bool) -> str:
        stripped = line.strip()
        if stripped[:1] in ("{", "["):
            try:
                return self.json_line(
                    stripped, anonymous=anonymous, timetolive=timetolive, unordered=unordered
                )
            except ValueError:
                pass
        m = _FIELDS_LINE.match(line)
        if m is not None:
            key, value = m.group("key"), m.group("value")
            if key in _MASKED_KEYS:
                return f'"{key}" : {_MASKED_KEYS[key]}'
            if timetolive and key in _TIMETOLIVE_KEYS:
                return f'"{key}" : {_TIMETOLIVE_KEYS[key]}'
            if key in _MASKED_STRING_KEYS and value.startswith('"'):
                return f'"{key}" : {_MASKED_STRING_KEYS[key]}'
        line = self.text(line, anonymous=anonymous)
        if timetolive:
            line = _REMAINING_TEXT.sub("remaining(<remaining>)", line)
            line = _ATTACHED_KEYS.sub(
                lambda m: "attached keys([" + " ".join(sorted(m.group(1).split(" "))) + "])", line
            )
        return line


def _sorted_json(value: object) -> object:
    """Sort every list of objects by its canonical text (for unordered steps)."""
    if isinstance(value, dict):
        return {k: _sorted_json(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted_json(v) for v in value]
        if all(isinstance(v, dict) for v in items):
            items.sort(key=lambda v: json.dumps(v, sort_keys=True))
        return items
    return value


def _mask_tables(lines: list[str]) -> list[str]:
    """Canonicalize etcdctl's ASCII tables: no padding, and masked columns by header name.

    Column widths follow the widest cell, so they differ wherever a masked value has another
    length (``3.4.0`` vs ``3.4.23``); the cells themselves are compared exactly.
    """
    out: list[str] = []
    header: list[str] | None = None
    for line in lines:
        if line.startswith("+") and set(line) <= {"+", "-"}:
            out.append("+")
            continue
        if not (line.startswith("|") and line.endswith("|")):
            header = None
            out.append(line)
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if header is None:
            header = cells
        else:
            cells = [
                _MASKED_COLUMNS.get(name, cell) if cell else cell
                for name, cell in zip(header, cells, strict=False)
            ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _mask_status_simple(line: str) -> str:
    parts = line.split(", ")
    if len(parts) != 10 or parts[4] not in ("true", "false"):
        return line
    for i, token in _STATUS_SIMPLE_COLUMNS.items():
        parts[i] = token
    return ", ".join(parts)


def _sorted_lease_keys(lines: list[str]) -> list[str]:
    """Sort the ``"Key" : ...`` lines of ``lease timetolive --keys -w fields`` in place.

    etcd lists a lease's keys from a Go map, in no fixed order (the simple and JSON forms are
    sorted in :meth:`Normalizer._line` and :meth:`Normalizer._json`).
    """
    slots = [i for i, line in enumerate(lines) if line.startswith('"Key" : ')]
    out = list(lines)
    for i, line in zip(slots, sorted(lines[i] for i in slots), strict=True):
        out[i] = line
    return out


def _sorted_records(lines: list[str]) -> list[str]:
    """Sort a table's body rows (its header row and borders stay), or else all lines."""
    rows = [i for i, line in enumerate(lines) if line.startswith("| ")]
    if not rows:
        return sorted(lines)
    body = rows[1:]
    out = list(lines)
    for i, line in zip(body, sorted(lines[i] for i in body), strict=True):
        out[i] = line
    return out
