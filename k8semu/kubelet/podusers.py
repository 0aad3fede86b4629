"""Each pod's own unprivileged user (the process runtime's isolation, issue 16 item 7).

Policy (docs/kubelet.md, "Pod users"):
- A kubelet running as root gives every pod a uid of its own from `--pod-user-range` (default
  200000-299999; its gid is the same number), claimed host-wide under CLAIMS_DIR, so the
  kubelets of several emulated nodes on one host never hand out one uid twice; released when
  the pod's directory goes. The preferred uid is a hash of the pod's uid (a kubelet restart
  finds the same one: it is also recorded in pod.json).
- Every container process, exec, attach, probe and hook runs as that user through util-linux
  `setpriv` (which execs in place, after the cgroup join, so no Python runs between fork and
  exec), with one capability kept ambient: CAP_NET_BIND_SERVICE, since pods share the host's
  network namespace (no per-pod `net.ipv4.ip_unprivileged_port_start`) and bind their ports
  (DNS on 53, web servers on 80) on their own pod IP. No other capability: a pod cannot
  signal the kubelet (root) or another pod's processes (another uid): EPERM.
- Every pod process is also in the shared group `first - 1` (199999 by default), which the
  kubelet grants traverse-only (`--x`) access, through a POSIX ACL entry, on the directories
  above its pod directories and above the interpreter and package the built-in images run
  from, where "others" may not already traverse (/root is 0700): nothing is made readable.
- A kubelet not running as root, with `--pod-user-range ""`, or where the ACLs cannot be set,
  runs pods as itself, and says so in its log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from k8semu.kubelet.runtime import RunAs
from k8semu.log import get_logger

log = get_logger(__name__)

DEFAULT_RANGE = "200000-299999"
CLAIMS_DIR = Path("/run/k8semu/pod-users")
_PROBES = 4096  # uids tried from the preferred one before giving up
# What a pod's processes keep of root's capabilities: binding ports below 1024.
_CAPS = "+net_bind_service"


@dataclass(frozen=True, slots=True)
class PodUser:
    """Who a pod's processes run as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def wrap(self, argv: Sequence[str], setpriv: str) -> list[str]:
        """`argv` run as this user (setpriv execs it in place: same pid)."""
        groups = (
            ["--groups", ",".join(map(str, self.groups))] if self.groups else ["--clear-groups"]
        )
        return [
            setpriv, "--reuid", str(self.uid), "--regid", str(self.gid), *groups,
            "--inh-caps", _CAPS, "--ambient-caps", _CAPS, "--", *argv,
        ]  # fmt: skip

    def to_json(self) -> list[int]:
        return [self.uid, self.gid, *self.groups]

    @classmethod
    def from_json(cls, data: object) -> PodUser | None:
        if not isinstance(data, list) or len(data) < 2 or not all(isinstance(i, int) for i in data):
            return None
        return cls(data[0], data[1], tuple(data[2:]))


def parse_range(text: str, *, flag: str = "--pod-user-range") -> tuple[int, int] | None:
    """FIRST-LAST (inclusive; FIRST > 1, so FIRST-1 is a non-root shared group), "" for none."""
    if not text.strip():
        return None
    first_s, sep, last_s = text.partition("-")
    if not sep or not first_s.strip().isdigit() or not last_s.strip().isdigit():
        raise ValueError(f"{flag}: {text!r}: want FIRST-LAST, e.g. {DEFAULT_RANGE}")
    first, last = int(first_s), int(last_s)
    if not 1 < first <= last < 2**31 - 1:
        raise ValueError(f"{flag}: {text!r}: want 1 < FIRST <= LAST < 2147483647")
    return first, last


class PodUsers:
    """The uids a kubelet hands to its pods; claims live in `claims_dir` (host-wide), each a
    file named for the uid holding its owner (the pod directory), under a lock."""

    def __init__(self, first: int, last: int, setpriv: str, claims_dir: Path = CLAIMS_DIR):
        self.first, self.last = first, last
        self.group = first - 1  # every pod's supplementary group: traverse-only grants
        self.setpriv = setpriv
        self.claims_dir = claims_dir

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.claims_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.claims_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def claim(self, owner: Path, seed: str, prefer: int | None = None) -> PodUser:
        """A uid for the pod whose directory is `owner` (the same one again for the same
        owner); OSError when the range is full."""
        size = self.last - self.first + 1
        start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % size
        candidates = [prefer] if prefer is not None and self.first <= prefer <= self.last else []
        candidates += [self.first + (start + i) % size for i in range(min(size, _PROBES))]
        with self._locked():
            for uid in candidates:
                if self._take(uid, str(owner)):
                    return PodUser(uid, uid, (self.group,))
        raise OSError(errno.EUSERS, f"no free uid in --pod-user-range {self.first}-{self.last}")

    def _take(self, uid: int, owner: str) -> bool:
        path = self.claims_dir / str(uid)
        try:
            held = path.read_text()
        except FileNotFoundError:
            held = ""
        if held and held != owner and Path(held).exists():
            return False  # another live pod's
        tmp = self.claims_dir / f".{uid}.tmp"
        tmp.write_text(owner)
        tmp.replace(path)
        return True

    def release(self, uid: int, owner: Path) -> None:
        path = self.claims_dir / str(uid)
        with self._locked(), contextlib.suppress(FileNotFoundError):
            if path.read_text() == str(owner):
                path.unlink()

    def grant_traverse(self, paths: Iterable[Path]) -> None:
        """The shared pod group may traverse every directory above `paths` (and them);
        OSError when an ACL cannot be set."""
        seen: set[Path] = set()
        for p in paths:
            for d in [p, *p.parents]:
                if d in seen or not d.is_dir():
                    continue
                seen.add(d)
                if grant_group_traverse(d, self.group):
                    log.info("pod users may traverse", path=str(d), group=self.group)


def runtime_paths() -> list[Path]:
    """What a built-in image's process must reach: the interpreter, its prefix, sys.path."""
    found = [Path(os.path.realpath(sys.executable)).parent, Path(sys.prefix), Path(sys.base_prefix)]
    found += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    return [p.resolve() for p in found]


def for_kubelet(range_text: str) -> tuple[PodUsers | None, str]:
    """The kubelet's PodUsers, or None and why pods run as the kubelet's own user."""
    bounds = parse_range(range_text)
    if bounds is None:
        return None, "--pod-user-range is empty"
    if os.geteuid() != 0:
        return None, "the kubelet does not run as root"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None, "no setpriv (util-linux) on the PATH"
    return PodUsers(*bounds, setpriv=setpriv), ""


# ---- POSIX ACLs (system.posix_acl_access), without the acl tools -------------------------

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_ENTRY = struct.Struct("<HHI")


def _acl(path: Path, mode: int) -> list[tuple[int, int, int]]:
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        raw = b""
    if len(raw) >= 4:
        return [_ENTRY.unpack_from(raw, off) for off in range(4, len(raw), _ENTRY.size)]
    return [
        (_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID),
        (_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID),
        (_OTHER, mode & 7, _UNDEFINED_ID),
    ]


def grant_group_traverse(path: Path, gid: int) -> bool:
    """Add `group:gid:--x` to `path`'s ACL (and x to its mask) unless others or that group
    may traverse it already; whether it changed anything."""
    mode = path.stat().st_mode
    if mode & 0o001:
        return False
    entries = _acl(path, mode)
    # A chmod since (pytest makes its /tmp/pytest-of-<user> 0700 again) rewrites the mask.
    masked = any(tag == _MASK and not perm & 1 for tag, perm, _ in entries)
    if not masked and any(tag == _GROUP and g == gid and perm & 1 for tag, perm, g in entries):
        return False
    group_obj = next((perm for tag, perm, _ in entries if tag == _GROUP_OBJ), 0)
    mask = next((perm for tag, perm, _ in entries if tag == _MASK), group_obj)
    kept = [e for e in entries if e[0] != _MASK and not (e[0] == _GROUP and e[2] == gid)]
    kept += [(_GROUP, 1, gid), (_MASK, mask | 1, _UNDEFINED_ID)]
    kept.sort(key=lambda e: (e[0], e[2]))
    raw = struct.pack("<I", _ACL_VERSION) + b"".join(_ENTRY.pack(*e) for e in kept)
    os.setxattr(path, _ACL_XATTR, raw)
    return True


# ---- files in a pod's directory, owned by its user -------------------------------------------


def make_dirs(target: Path, user: PodUser | None, mode: int = 0o755) -> None:
    """`target` and its missing parents, each made here owned by `user` (None: as is)."""
    missing = []
    d = target
    while not d.exists() and not d.is_symlink():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=mode)
            if user is not None:
                os.chown(d, user.uid, user.gid)


def write_file(target: Path, data: bytes, mode: int, user: PodUser | None) -> None:
    """`target` replaced atomically by `data` with `mode`, owned by `user`. The temporary
    file is made exclusively (never through a link a pod may have planted in its own
    directory: the kubelet is root)."""
    tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if user is not None:
                os.fchown(out.fileno(), user.uid, user.gid)
            os.fchmod(out.fileno(), mode & 0o7777)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def hand_over(target: Path, user: PodUser, pod_range: tuple[int, int]) -> None:
    """A volume directory (claim, hostPath) last owned by another pod's user becomes this
    pod's, recursively (Kubernetes' fsGroupChangePolicy OnRootMismatch, for the user): a
    StatefulSet's pod made again gets another uid and must still write its data. Never
    touches what a pod user does not own (the host's own directories)."""
    try:
        owner = target.stat().st_uid
    except OSError:
        return
    if owner == user.uid or not pod_range[0] <= owner <= pod_range[1]:
        return
    for root, dirs, files in os.walk(target):
        for name in [root, *(os.path.join(root, n) for n in [*dirs, *files])]:
            with contextlib.suppress(OSError):
                os.chown(name, user.uid, user.gid, follow_symlinks=False)


def effective(pod: PodUser, run_as: RunAs) -> PodUser:
    """Who a container runs as: its securityContext's runAsUser/runAsGroup where given, else
    the pod's own uid and group; always in the pod's group (to enter its directory), the
    shared traverse group, fsGroup and supplementalGroups."""
    uid = pod.uid if run_as.user is None else run_as.user
    gid = pod.gid if run_as.group is None else run_as.group
    extra = [*pod.groups, pod.gid]
    if run_as.fs_group is not None:
        extra.append(run_as.fs_group)
    extra += run_as.supplemental_groups
    return PodUser(uid, gid, tuple(dict.fromkeys(g for g in extra if g != gid)))


def file_owner(user: PodUser, run_as: RunAs, mode: int) -> tuple[PodUser, int]:
    """The owner and mode of a volume file of a container running as `user`: with fsGroup,
    group-owned by it and group-readable as the owner may read (0400 -> 0440), as Kubernetes
    applies fsGroup to volumes."""
    if run_as.fs_group is None:
        return user, mode
    return PodUser(user.uid, run_as.fs_group), mode | ((mode & 0o600) >> 3)
