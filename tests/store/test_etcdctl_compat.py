"""etcdctl against `k8semu store` and against real etcd 3.4: the same sessions, compared.

Every session is a script (a function of a Session) run once against a fresh 3-replica
k8semu store cluster and once against a fresh 3-member etcd cluster, at the same time. The two
transcripts - commands, stdin, stdout, stderr, exit codes - must be equal line by line after
`Normalizer` has masked what legitimately differs (cluster/member/lease ids, URLs, raft term
and index, db size, the server version string, KV hashes, remaining lease TTLs, timings; see
tests/support/etcdctl.py). Revisions, keys, values, versions, counts and error texts are
compared as printed. On a mismatch the test fails with a unified diff (etcd is the "from"
side) and leaves the raw transcripts next to it.

Sessions that print revisions get fresh clusters, so both sides start at revision 1. The
cluster-wide and error sessions share one pair of clusters: they run identical commands on both
sides, so both stay at the same revision whatever order they run in.

A store bug found this way gets its own test, marked xfail(strict=True, raises=Mismatch)
until it is fixed (none is open now).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, MemberExitedError
from k8semu.store.config import member_id
from tests.support.etcdctl import Etcdctl, EtcdctlProcess, Identity, Normalizer, Session, Step

pytestmark = pytest.mark.slow

# Upper bound for anything the test waits for (a watch to print, a lease to expire).
WAIT_S = 20.0
READY_S = 60.0
# Ports are picked free but may be taken before a member binds them (a busy host).
START_ATTEMPTS = 3

Script = Callable[[Session, Path], None]


class Mismatch(AssertionError):
    """k8semu behaves differently from etcd (what the xfail markers of known bugs expect)."""


class TranscriptMismatch(Mismatch):
    """The normalized etcdctl transcripts of etcd and k8semu differ."""


# -- clusters -------------------------------------------------------------------------------


@dataclass
class Pair:
    """A k8semu store cluster and an etcd cluster, both running, with their identities."""

    k8semu: K8semuStoreCluster
    etcd: EtcdCluster
    k8semu_id: Identity
    etcd_id: Identity
    # What `initial_script` printed right after start-up, before any test used the clusters
    # (only for the shared pair).
    initial: Compared | None = None


def _require_binaries() -> None:
    if not EtcdCluster.available():
        pytest.skip("etcd 3.4 is not installed at /usr/bin/etcd")
    if not Etcdctl.available():
        pytest.skip("etcdctl is not installed at /usr/bin/etcdctl")


def _token_with_unsorted_ids() -> str:
    """A cluster token under which k8semu's member ids are not in member-name order.

    Else the check that members are listed in member id order (as etcd does) would pass by
    chance on one run in six even if they came in name order.
    """
    for i in range(100):
        token = f"etcdctl-compat-{i}"
        ids = [member_id(name, token) for name in ("s1", "s2", "s3")]
        if ids != sorted(ids):
            return token
    raise AssertionError("no token gives unsorted member ids")


def _start_pair(base: Path, token: str | None = None, extra_args: tuple[str, ...] = ()) -> Pair:
    """Start both clusters; again on fresh ports if a port was taken under a member's feet."""
    for attempt in range(1, START_ATTEMPTS + 1):
        where = base / f"attempt{attempt}"
        k8semu = K8semuStoreCluster(where / "k8semu", 3, token=token, extra_args=extra_args)
        etcd = EtcdCluster(where / "etcd", 3, token=token, extra_args=extra_args)
        try:
            # Both start at once; the slower one bounds the wait.
            k8semu.start()
            etcd.start()
            k8semu.wait_ready(timeout=READY_S)
            etcd.wait_ready(timeout=READY_S)
            return Pair(k8semu, etcd, Identity.of(k8semu), Identity.of(etcd))
        except BaseException as exc:
            k8semu.close()
            etcd.close()
            port_taken = isinstance(exc, MemberExitedError) and "already in use" in str(exc)
            if not port_taken or attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _pair(base: Path, token: str | None = None, extra_args: tuple[str, ...] = ()) -> Iterator[Pair]:
    pair = _start_pair(base, token, extra_args)
    try:
        yield pair
    finally:
        pair.k8semu.close()
        pair.etcd.close()


@pytest.fixture
def fresh_pair(tmp_path: Path) -> Iterator[Pair]:
    _require_binaries()
    with _pair(tmp_path / "clusters") as pair:
        yield pair


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    _require_binaries()
    base = tmp_path_factory.mktemp("etcdctl-shared")
    with _pair(base / "clusters", token=_token_with_unsorted_ids()) as pair:
        # Taken before any test runs, so that what depends on "never compacted" does not
        # depend on the order the tests run in.
        pair.initial = run_both(pair, initial_script, base / "initial")
        yield pair


# -- running and comparing ----------------------------------------------------------------


@dataclass
class Compared:
    """The two sessions of one script, after both ran."""

    k8semu: Session
    etcd: Session

    def sessions(self) -> dict[str, Session]:
        return {"k8semu": self.k8semu, "etcd": self.etcd}


def run_both(pair: Pair, script: Script, out_dir: Path) -> Compared:
    """Run ``script`` against both clusters concurrently, each in its own work directory."""
    sessions = {
        "k8semu": Session(Etcdctl(pair.k8semu.endpoints), pair.k8semu_id, "k8semu store"),
        "etcd": Session(Etcdctl(pair.etcd.endpoints), pair.etcd_id, "etcd"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = []
        for name, session in sessions.items():
            workdir = out_dir / name
            workdir.mkdir(parents=True, exist_ok=True)
            futures.append(pool.submit(script, session, workdir))
        for f in futures:
            f.result()
    return Compared(sessions["k8semu"], sessions["etcd"])


def assert_same(compared: Compared, out_dir: Path) -> None:
    """Fail with a unified diff if the normalized transcripts differ."""
    texts = {}
    for name, session in compared.sessions().items():
        (out_dir / f"{name}.raw.txt").write_text("\n".join(session.transcript()) + "\n")
        normalized = session.transcript(Normalizer(session.identity, session.leases))
        (out_dir / f"{name}.txt").write_text("\n".join(normalized) + "\n")
        texts[name] = normalized
    # The etcd side is the reference: a step of it that hung means the test is broken.
    hung = [s.render()[0] for s in compared.etcd.steps if s.note.startswith("killed")]
    assert not hung, f"etcd itself did not finish: {hung}"
    if texts["k8semu"] != texts["etcd"]:
        diff = "\n".join(
            difflib.unified_diff(
                texts["etcd"],
                texts["k8semu"],
                fromfile="etcd 3.4 (normalized)",
                tofile="k8semu store (normalized)",
                lineterm="",
                n=4,
            )
        )
        print(diff)
        raise TranscriptMismatch(
            f"etcdctl transcripts differ (raw and normalized transcripts in {out_dir}):\n{diff}"
        )


def steps_of(session: Session, *args: str) -> list[Step]:
    """The recorded steps whose arguments start with ``args``."""
    return [s for s in session.steps if s.args[: len(args)] == args]


# -- script helpers -----------------------------------------------------------------------


def json_of(step: Step) -> dict[str, object]:
    """The JSON a ``-w json`` step printed, or {} when it printed something else.

    Scripts use values from their own cluster's output (a revision to compact at); if the
    store printed garbage, the next command differs and the diff shows it.
    """
    try:
        value = json.loads(step.stdout)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def header_revision(step: Step) -> int:
    header = json_of(step).get("header")
    return int(header.get("revision", -1)) if isinstance(header, dict) else -1


def create_revision(step: Step) -> int:
    kvs = json_of(step).get("kvs")
    if isinstance(kvs, list) and kvs and isinstance(kvs[0], dict):
        return int(kvs[0].get("create_revision", -1))
    return -1


def poll(s: Session, args: tuple[str, ...], until: Callable[[Step], bool]) -> None:
    """Run ``args`` unrecorded until ``until(step)`` holds, or WAIT_S seconds have passed."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if until(s.run(*args, record=False)):
            return
        time.sleep(0.1)


def ends_with_event(out: str, kind: str, key: str, value: str) -> bool:
    """Whether watch output ends with an event of ``kind`` on ``key`` (no prev kv)."""
    return out.endswith(f"{kind}\n{key}\n{value}\n")


def finish(s: Session, proc: EtcdctlProcess, until: Callable[[str], bool]) -> Step:
    """Wait (bounded) until a background etcdctl printed what ``until`` wants, stop it,
    and record it."""
    proc.wait_for(until, WAIT_S)
    proc.stop()
    step = proc.step()
    s.add(step)
    return step


def txn_stdin(compares: list[str], success: list[str], failure: list[str]) -> str:
    """The stdin of ``etcdctl txn``: three blocks, each ended by an empty line."""
    return "".join(line + "\n" for block in (compares, success, failure) for line in (*block, ""))


# -- sessions on fresh clusters ------------------------------------------------------------


def kv_and_txn_script(s: Session, workdir: Path) -> None:
    run = s.run
    # put
    run("put", "kv/a", "1")
    run("put", "kv/a", "2", "--prev-kv")
    run("put", "kv/b", "1", "-w", "json")
    run("put", "kv/b", "2", "--prev-kv", "-w", "json")
    run("put", "kv/c", stdin="a value\nover two lines")
    run("put", "kv/c", "--prev-kv", "-w", "fields", "--", "-starts-with-a-dash")
    for key, value in (("kv/d/x", "x1"), ("kv/d/y", "y1"), ("kv/d/z", "z1"), ("kv/e", "e1")):
        run("put", key, value)
    run("put", "kv/a", "3")
    run("put", "kv/d/y", "y2")
    run("put", "kv/a", "--ignore-value")  # new revision and version, same value
    run("put", "kv/none", "--ignore-value")  # key not found
    run("put", "kv/none", "x", "--ignore-lease")  # key not found
    # get: single, missing, formats
    run("get", "kv/a")
    run("get", "kv/a", "-w", "json")
    run("get", "kv/a", "-w", "fields")
    run("get", "kv/c")
    run("get", "kv/missing")
    run("get", "kv/missing", "-w", "json")
    # ranges
    run("get", "--prefix", "kv/")
    run("get", "--prefix", "kv/d/", "-w", "json")
    run("get", "--from-key", "kv/d/y")
    run("get", "--from-key", "kv/d/y", "-w", "json")
    run("get", "kv/b", "kv/d/y")
    run("get", "--prefix", "", "--keys-only")
    run("get", "--from-key", "", "--limit=2", "--keys-only")
    # history
    run("get", "kv/a", "--rev=1")
    run("get", "kv/a", "--rev=2")
    run("get", "kv/a", "--rev=3", "-w", "json")
    run("get", "--prefix", "kv/", "--rev=8", "-w", "json")
    # limit, count, sort (etcdctl 3.4 has no --count-only, it came in 3.5: the total "count"
    # of a limited range is compared in the json and fields forms instead)
    run("get", "--prefix", "kv/", "--limit=2", "-w", "json")
    run("get", "--prefix", "kv/", "--limit=3")
    run("get", "--prefix", "kv/", "--limit=1", "-w", "fields")
    for target in ("KEY", "CREATE", "MODIFY", "VALUE", "VERSION"):
        for order in ("ASCEND", "DESCEND"):
            run("get", "--prefix", "kv/", f"--sort-by={target}", f"--order={order}", "--keys-only")
    run("get", "--prefix", "kv/", "--order=DESCEND")
    run("get", "--prefix", "kv/", "--sort-by=MODIFY", "--order=DESCEND", "--limit=2", "-w", "json")
    run("get", "--prefix", "kv/", "--sort-by=VERSION", "--limit=2")
    # output shapes
    run("get", "--prefix", "kv/", "--keys-only")
    run("get", "--prefix", "kv/", "--keys-only", "-w", "json")
    run("get", "kv/a", "--print-value-only")
    run("get", "--prefix", "kv/d/", "--print-value-only")
    run("get", "--prefix", "kv/d/", "--hex")
    # del
    before_delete = header_revision(run("get", "kv/a", "-w", "json"))
    run("del", "kv/a", "--prev-kv")
    run("del", "kv/a")
    run("del", "kv/missing", "-w", "json")
    run("del", "--prefix", "kv/d/", "--prev-kv", "-w", "json")
    run("del", "kv/b", "-w", "json")
    run("del", "--from-key", "kv/e", "--prev-kv")
    run("get", "--prefix", "kv/", "-w", "json")
    run("get", "kv/a", f"--rev={before_delete}")
    run("get", "--prefix", "kv/d/", f"--rev={before_delete}", "-w", "json")
    run("put", "kv/a", "again", "-w", "json")
    run("get", "kv/a", "-w", "json")

    # txn: interactive form, every compare target, both branches
    run("put", "tx/a", "1")
    created = create_revision(run("get", "tx/a", "-w", "json"))
    run(
        "txn",
        "-i",
        stdin=txn_stdin(
            [
                'value("tx/a") = "1"',
                'version("tx/a") = "1"',
                f'create("tx/a") = "{created}"',
                'mod("tx/a") < "1000"',
            ],
            ["put tx/a 2", "get tx/a", "del tx/gone", "put tx/b x"],
            ["put tx/failed yes"],
        ),
    )
    run(
        "txn",
        "-i",
        stdin=txn_stdin(['value("tx/a") = "1"'], ["put tx/succeeded yes"], ["get tx/a"]),
    )
    run(
        "txn",
        stdin=txn_stdin(
            ['value("tx/a") = "nope"'], ["put tx/a 3"], ["get --prefix tx/", "put tx/failed 1"]
        ),
    )
    run(
        "txn",
        "-w",
        "json",
        stdin=txn_stdin(
            ['mod("tx/a") > "0"', 'version("tx/none") = "0"', 'create("tx/none") = "0"'],
            ["del --prev-kv tx/b", "get tx/a", "put tx/c 1"],
            ["put tx/failed 2"],
        ),
    )
    run(
        "txn",
        "-w",
        "json",
        stdin=txn_stdin(
            ['value("tx/none") = ""'], ["put tx/failed 3"], ["get tx/none", "get --prefix tx/"]
        ),
    )
    run("txn", stdin=txn_stdin([f'create("tx/a") > "{created}"'], [], ["del tx/failed"]))
    run("txn", stdin=txn_stdin([], ["put tx/d 1"], []))
    run("txn", "-w", "fields", stdin=txn_stdin(['version("tx/d") = "1"'], ["put tx/d 2"], []))
    # duplicated keys in one branch are refused; the same key in both branches is not
    run("txn", stdin=txn_stdin([], ["put tx/e 1", "put tx/e 2"], []))
    run("txn", stdin=txn_stdin([], ["put tx/e 1", "del tx/e"], []))
    run("txn", stdin=txn_stdin([], ["del --prefix tx/", "put tx/e 1"], []))
    run("txn", stdin=txn_stdin([], [], ["put tx/e 1", "put tx/e 2"]))
    run("txn", stdin=txn_stdin([], ["put tx/e 1"], ["put tx/e 2"]))
    # more than the 128 operations a txn may carry
    run("txn", stdin=txn_stdin([], [f"put tx/many/{i:03d} x" for i in range(129)], []))
    run("get", "--prefix", "tx/", "-w", "json")


def test_kv_and_txn_session(fresh_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(fresh_pair, kv_and_txn_script, tmp_path)
    assert_same(compared, tmp_path)
    # The comparison is only worth something if the session did real work.
    last = compared.etcd.steps[-1]
    assert last.returncode == 0 and '"count":4' in last.stdout, last.render()


def watch_script(s: Session, workdir: Path) -> None:
    run = s.run
    everything = ("watch", "--prefix", "--rev=1", "--prev-kv", "")
    sentinel = ("PUT", "zz-done", "1")
    live = s.etcdctl.start(*everything)
    with live:
        run("put", "w/a", "1")
        run("put", "w/a", "2")
        run("put", "w/b", "1")
        run("del", "w/a")
        run("txn", stdin=txn_stdin([], ["put w/c 1", "put w/d 1", "del w/b"], []))
        run("lease", "grant", "300")
        run("put", f"--lease={s.lease(0)}", "w/l1", "1")
        run("put", f"--lease={s.lease(0)}", "w/l2", "2")
        run("lease", "revoke", s.lease(0))
        run("put", "w/e", stdin="multi\nline")
        run("del", "--prefix", "w/")
        run("put", "w/a", "back")
        run("put", *sentinel[1:])
        finish(s, live, lambda out: ends_with_event(out, *sentinel))
    # The same history replayed to a watcher that starts after it happened.
    with s.etcdctl.start(*everything) as replay:
        finish(s, replay, lambda out: ends_with_event(out, *sentinel))
    # A single key from a revision on, with a command run per event (etcdctl passes the
    # response header's revision, here the current one, and the event in its environment).
    show = (
        'echo "$ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE" >&2'
    )
    with s.etcdctl.start("watch", "--rev=3", "w/a", "--", "sh", "-c", show) as one_key:
        one_key.wait_for(lambda out: ends_with_event(out, "PUT", "w/a", "back"), WAIT_S)
        # The exec'd command runs after the events are printed: wait for its last line too.
        deadline = time.monotonic() + WAIT_S
        while '"w/a" "back"' not in one_key.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        finish(s, one_key, lambda out: True)
    # Interactive: a watch request, a progress request, a live event, bad lines, EOF.
    with s.etcdctl.start("watch", "-i", interactive=True) as interactive:
        interactive.send("watch --prefix --prev-kv --rev=1 w/")
        interactive.wait_for(lambda out: ends_with_event(out, "PUT", "w/a", "back"), WAIT_S)
        interactive.send("progress")
        interactive.wait_for(lambda out: out.endswith("\n") and "progress notify" in out, WAIT_S)
        run("put", "w/live", "1")
        interactive.wait_for(lambda out: ends_with_event(out, "PUT", "w/live", "1"), WAIT_S)
        for line in ("foo", "", "watch"):
            interactive.send(line)
        interactive.close_stdin()
        interactive.wait_exit(WAIT_S)
        interactive.stop()
        s.add(interactive.step())


def test_watch_session(fresh_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(fresh_pair, watch_script, tmp_path)
    assert_same(compared, tmp_path)
    for name, session in compared.sessions().items():
        live, replay = steps_of(session, "watch", "--prefix", "--rev=1")
        # A watcher that was there as it happened and one that replays it see the same.
        assert live.stdout == replay.stdout, f"{name}: live and replayed watch differ"
        assert live.stdout.count("DELETE\n") == 7, f"{name}:\n{live.stdout}"


def lease_script(s: Session, workdir: Path) -> None:
    run = s.run
    run("lease", "grant", "300")
    run("lease", "grant", "600", "-w", "json")
    l1, l2 = s.lease(0), s.lease(1)
    run("put", f"--lease={l1}", "ls/a", "1")
    run("put", f"--lease={l1}", "ls/b", "2", "-w", "json")
    run("put", f"--lease={l2}", "ls/c", "3")
    run("put", "ls/d", "4")
    run("get", "--prefix", "ls/", "-w", "json")
    run("get", "ls/a", "-w", "fields")
    run("lease", "timetolive", l1)
    run("lease", "timetolive", "--keys", l1)
    run("lease", "timetolive", "--keys", l2, "-w", "json")
    run("lease", "timetolive", "--keys", l1, "-w", "fields")
    run("lease", "keep-alive", "--once", l1)
    run("lease", "keep-alive", "--once", l2, "-w", "json")
    # etcd sorts by expiry, and a follower holds every lease "forever": with two leases the
    # order depends on which member answers, so it is sorted away here.
    run("lease", "list", unordered=True)
    run("lease", "list", "-w", "json", unordered=True)
    # --ignore-lease keeps the lease, --ignore-value keeps the value, a plain put detaches
    run("put", "ls/b", "22", "--ignore-lease")
    run("put", "ls/c", "--ignore-value", f"--lease={l1}")
    run("put", "ls/d", f"--lease={l2}", "44")
    run("put", "ls/a", "11")
    run("get", "--prefix", "ls/", "-w", "json")
    run("lease", "timetolive", "--keys", l1)
    run("lease", "timetolive", "--keys", l2)
    # revoke: the keys under the lease go, in one revision
    run("lease", "revoke", l1)
    run("get", "--prefix", "ls/", "-w", "json")
    run("lease", "timetolive", l1)
    run("lease", "list")
    run("lease", "revoke", l1)
    run("lease", "keep-alive", "--once", l1)
    run("put", f"--lease={l1}", "ls/x", "1")
    # expiry: a lease that is not kept alive takes its keys with it
    run("lease", "grant", "2")
    l3 = s.lease(2)
    run("put", f"--lease={l3}", "ls/short", "1")
    poll(s, ("get", "ls/short", "--keys-only"), lambda st: st.returncode == 0 and not st.stdout)
    run("get", "--prefix", "ls/", "-w", "json")
    run("lease", "timetolive", l3)
    run("lease", "revoke", l2)
    run("get", "--prefix", "ls/")
    run("lease", "list")
    # errors
    run("lease", "revoke", "1234")
    run("lease", "keep-alive", "--once", "1234")
    run("lease", "timetolive", "1234")
    run("lease", "grant", "9000000001")
    run("get", "--prefix", "ls/", "-w", "json")


def test_lease_session(fresh_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(fresh_pair, lease_script, tmp_path)
    assert_same(compared, tmp_path)
    for name, session in compared.sessions().items():
        after_revoke = json_of(steps_of(session, "get", "--prefix", "ls/", "-w", "json")[2])
        kvs = after_revoke.get("kvs")
        assert isinstance(kvs, list) and len(kvs) == 2, f"{name}: {after_revoke}"


def compaction_script(s: Session, workdir: Path) -> None:
    run = s.run
    for i in range(1, 5):
        run("put", "c/a", f"v{i}")  # revisions 2..5
    run("put", "c/b", "1")  # 6
    run("del", "c/b")  # 7
    run("put", "c/a", "v5")  # 8
    run("get", "c/a", "--rev=3")
    run("compaction", "5")
    run("get", "c/a", "--rev=5", "-w", "json")
    run("get", "c/a", "--rev=6")
    run("get", "--prefix", "c/", "--rev=6", "-w", "json")
    run("get", "c/b", "--rev=7", "-w", "json")
    # watching from a compacted revision: the server cancels the watch
    run("watch", "--rev=2", "c/a", timeout=WAIT_S)
    # (from the compaction revision itself it is not: test_watch_from_the_compaction_revision)
    with s.etcdctl.start("watch", "--rev=6", "--prefix", "c/") as after:
        finish(s, after, lambda out: ends_with_event(out, "PUT", "c/a", "v5"))
    run("compaction", "--physical", "7")
    run("get", "c/a", "--rev=7", "-w", "json")
    run("endpoint", "hashkv", "-w", "json")
    run("put", "c/a", "v6", "-w", "json")
    run("get", "c/a", "-w", "json")


def test_compaction_session(fresh_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(fresh_pair, compaction_script, tmp_path)
    assert_same(compared, tmp_path)


# Sizes chosen so that both stores take every decision the same way although their files
# grow differently (bbolt copies pages on write): each side checks "size + what the write adds
# < quota" before a write (etcd's rule). An empty store is ~30 kB on both sides; after the
# 400 kB value about 0.43 MB, so the 700 kB value does not fit until that space is compacted
# and defragmented away; small writes always fit, so only the alarm refuses them.
QUOTA_BYTES = 1_000_000
VALUE_400K = "x" * 400_000
# Over the quota by itself (cost > quota), so both stores refuse it whatever their file sizes
# are at that moment: etcd's size moves with bbolt's batched commits and growth steps, so a
# value that passes or fails depending on it made the two transcripts differ now and then.
VALUE_OVER = "y" * 1_100_000
VALUE_100K = "z" * 100_000


def quota_script(s: Session, workdir: Path) -> None:
    run = s.run
    run("put", "big/1", stdin=VALUE_400K)  # revision 2
    run("put", "big/2", stdin=VALUE_OVER)  # over the quota: refused, NOSPACE raised
    run("alarm", "list")
    # With the alarm on, what may grow the store is refused on every member...
    run("put", "small", "1")
    run("txn", stdin=txn_stdin([], ["put small 1"], []))
    run("lease", "grant", "30")
    run("endpoint", "status", "-w", "json")
    # ... while reads, deletes and txns without puts still work.
    run("get", "--prefix", "big/", "--keys-only")
    run("get", "big/1", "-w", "json", "--keys-only")
    run("txn", stdin=txn_stdin([], ["del big/none"], []))
    run("del", "big/none")
    # Disarming while still over the quota: the next such write raises it again.
    run("alarm", "disarm")
    run("alarm", "list")
    run("put", "big/2", stdin=VALUE_OVER)
    run("alarm", "list")
    # Recovery: delete, compact, defragment, disarm; then writes work and nothing else is lost.
    run("put", "keep", "me")  # refused (alarm): nothing half-written
    run("del", "big/1")  # 3
    run("compaction", "--physical", "3")
    run("defrag")
    run("alarm", "disarm")
    run("alarm", "list")
    run("put", "small", "1")  # 4
    run("put", "big/2", stdin=VALUE_100K)  # 5
    run("get", "--prefix", "", "--keys-only", "-w", "json")
    run("get", "small", "-w", "json")
    run("endpoint", "status", "-w", "json")


def test_quota_nospace_alarm_and_recovery(tmp_path: Path) -> None:
    """--quota-backend-bytes on both sides, the same session: NOSPACE raised cluster-wide,
    writes refused with etcd's error, reads/deletes/compaction/defrag allowed, alarm list and
    disarm as on etcd; recovered by compact + defrag + disarm with nothing lost."""
    _require_binaries()
    args = ("--quota-backend-bytes", str(QUOTA_BYTES))
    with _pair(tmp_path / "clusters", extra_args=args) as pair:
        compared = run_both(pair, quota_script, tmp_path)
    assert_same(compared, tmp_path)
    k8semu = compared.k8semu
    assert "alarm:NOSPACE" in steps_of(k8semu, "alarm", "list")[0].stdout
    assert "database space exceeded" in steps_of(k8semu, "put", "small", "1")[0].stderr
    assert steps_of(k8semu, "put", "small", "1")[-1].returncode == 0
    assert steps_of(k8semu, "put", "big/2")[-1].returncode == 0


# -- sessions on the shared clusters -------------------------------------------------------


def initial_script(s: Session, workdir: Path) -> None:
    s.run("endpoint", "hashkv", "-w", "json")


def test_hashkv_compact_revision_before_any_compaction(shared_pair: Pair, tmp_path: Path) -> None:
    assert shared_pair.initial is not None
    assert_same(shared_pair.initial, tmp_path)


def cluster_script(s: Session, workdir: Path) -> None:
    run = s.run
    # Compacted first, so the hashkv output below does not depend on whether another test on
    # these clusters compacted before (never-compacted: see the test above).
    current = header_revision(run("put", "info/a", "1", "-w", "json"))
    run("compaction", str(current))
    # Rows whose order follows member ids (each cluster has its own) or health-check completion
    # are sorted after masking (unordered); where the leader's row differs, endpoints are
    # masked without the member's name (anonymous). The test checks the raw rows apart.
    run("member", "list", unordered=True)
    run("member", "list", "-w", "table", unordered=True)
    run("member", "list", "-w", "json", unordered=True)
    run("endpoint", "status", unordered=True, anonymous=True)
    run("endpoint", "status", "-w", "table", unordered=True, anonymous=True)
    run("endpoint", "status", "-w", "json")
    run("endpoint", "status", "-w", "fields")
    run("endpoint", "status", "--cluster", unordered=True, anonymous=True)
    run("endpoint", "health", unordered=True)
    run("endpoint", "health", "-w", "json", unordered=True)
    run("endpoint", "health", "-w", "table", unordered=True)
    run("endpoint", "health", "--cluster", unordered=True)
    run("endpoint", "hashkv")
    run("endpoint", "hashkv", "-w", "table")
    run("endpoint", "hashkv", "-w", "json")
    run("alarm", "list")
    run("defrag")
    run("get", "info/a", "-w", "json")


def test_cluster_session(shared_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(shared_pair, cluster_script, tmp_path)
    assert_same(compared, tmp_path)
    for name, session in compared.sessions().items():
        identity = session.identity
        members = json_of(steps_of(session, "member", "list", "-w", "json")[0]).get("members")
        assert isinstance(members, list) and len(members) == 3, f"{name}: {members}"
        ids = [m["ID"] for m in members]
        assert ids == sorted(ids), f"{name}: members not in member id order: {members}"
        assert {m["name"]: m["ID"] for m in members} == dict(identity.member_ids), name
        for m in members:
            assert m["clientURLs"] == [identity.client_urls[m["name"]]], f"{name}: {m}"
            assert m["peerURLs"] == [identity.peer_urls[m["name"]]], f"{name}: {m}"
        assert all(
            row.split(", ")[1] == "started"
            for row in steps_of(session, "member", "list")[0].stdout.splitlines()
        ), name
        statuses = json.loads(steps_of(session, "endpoint", "status", "-w", "json")[0].stdout)
        leaders = {st["Status"]["leader"] for st in statuses}
        assert len(leaders) == 1 and leaders <= set(identity.member_ids.values()), name
        leading = [st for st in statuses if st["Status"]["header"]["member_id"] in leaders]
        assert len(leading) == 1, f"{name}: no single leader in {statuses}"
        table = steps_of(session, "endpoint", "status", "-w", "table")[0].stdout
        rows = [[c.strip() for c in r.strip("|").split("|")] for r in table.splitlines()]
        rows = [r for r in rows if len(r) > 1]
        column = rows[0].index("IS LEADER")
        assert [r[column] for r in rows[1:]].count("true") == 1, f"{name}:\n{table}"
        hashes = json.loads(steps_of(session, "endpoint", "hashkv", "-w", "json")[0].stdout)
        assert len({h["HashKV"]["hash"] for h in hashes}) == 1, f"{name}: members differ"


def errors_script(s: Session, workdir: Path) -> None:
    run = s.run
    run("put", "err/a", "1")
    run("get", "")
    run("put", "", "x")
    run("del", "")
    run("put", "err/none", "--ignore-value")
    run("put", "err/none", "x", "--ignore-lease")
    run("put", "--lease=1234", "err/x", "1")
    run("lease", "revoke", "1234")
    run("lease", "timetolive", "1234")
    run("lease", "keep-alive", "--once", "1234")
    run("lease", "grant", "9000000001")
    run("txn", stdin=txn_stdin([], ["put err/t 1", "put err/t 2"], []))
    run("txn", stdin=txn_stdin(['value("err/a") = "1"'], ["put err/t 1", "del err/t"], []))
    run("put", "err/big", stdin="x" * (1700 * 1024))  # over --max-request-bytes (1.5 MiB)
    run("get", "err/a", "--rev=-5")  # a negative revision means "now"
    run("get", "--prefix", "err/", "-w", "json")


def test_error_cases(shared_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(shared_pair, errors_script, tmp_path)
    assert_same(compared, tmp_path)


def revision_errors_script(s: Session, workdir: Path) -> None:
    run = s.run
    run("put", "rev/a", "1")
    current = header_revision(run("put", "rev/a", "2", "-w", "json"))
    run("get", "rev/a", f"--rev={current + 1000}")
    run("compaction", str(current + 1000))
    run("compaction", str(current))
    run("get", "rev/a", f"--rev={current - 1}")
    run("compaction", str(current - 1))
    run("get", "rev/a", f"--rev={current}", "-w", "json")


def test_compacted_and_future_revision_errors(shared_pair: Pair, tmp_path: Path) -> None:
    assert_same(run_both(shared_pair, revision_errors_script, tmp_path), tmp_path)


def watch_at_compaction_script(s: Session, workdir: Path) -> None:
    run = s.run
    run("put", "wc/a", "1")
    current = header_revision(run("put", "wc/a", "2", "-w", "json"))
    run("put", "wc/b", "1")
    run("compaction", str(current))
    run("get", "--prefix", "wc/", f"--rev={current}", "-w", "json")
    with s.etcdctl.start("watch", f"--rev={current}", "--prefix", "wc/") as at_compaction:
        run("put", "wc/done", "1")
        finish(s, at_compaction, lambda out: ends_with_event(out, "PUT", "wc/done", "1"))


def test_watch_from_the_compaction_revision(shared_pair: Pair, tmp_path: Path) -> None:
    assert_same(run_both(shared_pair, watch_at_compaction_script, tmp_path), tmp_path)


def snapshot_script(s: Session, workdir: Path) -> None:
    s.run("put", "snap/a", "1")
    s.run("snapshot", "save", "snapshot.db", endpoints=s.etcdctl.endpoints[:1], cwd=workdir)


def test_snapshot_save(shared_pair: Pair, tmp_path: Path) -> None:
    compared = run_both(shared_pair, snapshot_script, tmp_path)
    # The reference first: etcd's snapshot must have worked.
    (etcd_step,) = steps_of(compared.etcd, "snapshot")
    assert etcd_step.returncode == 0, etcd_step.render()
    assert (tmp_path / "etcd" / "snapshot.db").stat().st_size > 0
    assert_same(compared, tmp_path)
    (k8semu_step,) = steps_of(compared.k8semu, "snapshot")
    assert k8semu_step.returncode == 0, k8semu_step.render()
    assert (tmp_path / "k8semu" / "snapshot.db").stat().st_size > 0


# -- the normalizer itself (no clusters) ---------------------------------------------------


def _identity(cluster_id: int, first_member: int, port: int) -> Identity:
    names = ("s1", "s2", "s3")
    return Identity(
        cluster_id=cluster_id,
        member_ids={n: first_member + i for i, n in enumerate(names)},
        client_urls={n: f"http://127.0.0.1:{port + 2 * i}" for i, n in enumerate(names)},
        peer_urls={n: f"http://127.0.0.1:{port + 2 * i + 1}" for i, n in enumerate(names)},
    )


A = _identity(11174816936359992305, 13267078637987905421, 40000)
B = _identity(10110147340205119822, 3156767488115819837, 50000)


def _get_json(identity: Identity, *, revision: int, term: int, member: str, lease: int) -> Step:
    out = (
        f'{{"header":{{"cluster_id":{identity.cluster_id},'
        f'"member_id":{identity.member_ids[member]},"revision":{revision},"raft_term":{term}}},'
        f'"kvs":[{{"key":"YQ==","create_revision":2,"mod_revision":{revision},"version":1,'
        f'"value":"MQ==","lease":{lease}}}],"count":1}}\n'
    )
    return Step(("get", "a", "-w", "json"), None, 0, out, "")


def test_normalizer_masks_identities_but_not_data() -> None:
    a = Normalizer(A, [0x582CA21858ED710D])
    b = Normalizer(B, [0x005A0069BF89B134])
    same = a.step(_get_json(A, revision=3, term=2, member="s3", lease=0x582CA21858ED710D))
    assert same == b.step(_get_json(B, revision=3, term=1, member="s1", lease=0x005A0069BF89B134))
    assert '"revision":3' in same[1] and "<lease-1>" in same[1], same
    # A revision, a lease that was never granted, a member id of another cluster: all show.
    assert same != b.step(_get_json(B, revision=4, term=1, member="s1", lease=0x005A0069BF89B134))
    assert same != b.step(_get_json(B, revision=3, term=1, member="s1", lease=0x1234))
    wrong = _get_json(A, revision=3, term=1, member="s1", lease=0x005A0069BF89B134)
    assert same != b.step(wrong)


def test_normalizer_tables_and_unordered_rows() -> None:
    def status(identity: Identity, leader: str, version: str) -> Step:
        rows = [
            f"| {identity.client_urls[n].removeprefix('http://')} | "
            f"{identity.member_ids[n]:x} | {version:>7} |   20 kB | "
            f"{str(n == leader).lower():>9} |      false |         2 |         27 |"
            "                 27 |        |"
            for n in ("s1", "s2", "s3")
        ]
        head = (
            "|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER |"
            " RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |"
        )
        border = "+" + "-" * 20 + "+"
        out = "\n".join([border, head, border, *rows, border]) + "\n"
        return Step(
            ("endpoint", "status", "-w", "table"), None, 0, out, "", unordered=True, anonymous=True
        )

    a, b = Normalizer(A, []), Normalizer(B, [])
    assert a.step(status(A, "s1", "3.4.23")) == b.step(status(B, "s3", "3.4.0"))
    # Two leaders is not a masked difference.
    two = status(B, "s3", "3.4.0")
    two = Step(
        two.args,
        None,
        0,
        two.stdout.replace("false", "true", 1),
        "",
        unordered=True,
        anonymous=True,
    )
    assert a.step(status(A, "s1", "3.4.23")) != b.step(two)


def test_normalizer_log_lines_and_error_text() -> None:
    def failed(identity: Identity, desc: str) -> Step:
        endpoint = identity.client_urls["s1"].removeprefix("http://")
        log = (
            '{"level":"warn","ts":"2026-01-01T00:00:00.000Z","caller":"x.go:62",'
            '"msg":"retrying of unary invoker failed","target":"endpoint://client-'
            f'0ef39a14-cea8-45c9-8545-a3445ede5768/{endpoint}","attempt":0,'
            f'"error":"rpc error: code = OutOfRange desc = {desc}"}}'
        )
        return Step(("get", "a", "--rev=9"), None, 1, "", f"{log}\nError: {desc}\n")

    text = "etcdserver: mvcc: required revision is a future revision"
    a, b = Normalizer(A, []), Normalizer(B, [])
    assert a.step(failed(A, text)) == b.step(failed(B, text))
    assert a.step(failed(A, text)) != b.step(failed(B, text.removeprefix("etcdserver: ")))
    assert re.search(r"client-<uuid>/<endpoint:s1>", "\n".join(a.step(failed(A, text))))
