"""Kubernetes' atomic writer: the files of a configMap, secret, downwardAPI or projected volume
(and the ServiceAccount token mount) laid out so that an update is one rename.

    <mount>/..2026_12_05_18_48_58.1f2e3d4c/   the files of one version (the kubelet's, 0755)
    <mount>/..data -> ..2026_12_05_18_48_58.1f2e3d4c
    <mount>/<key>  -> ..data/<key>            one link per top-level name

A new version is written into a new timestamped directory, `..data_tmp` is made to point at it
and renamed over `..data` (rename(2) is atomic), then links of names that went are removed. A
reader sees the old version or the new one, never a mix or a half-written file. The previous
version's directory is kept until the next write (Kubernetes removes it at once), so a reader
that resolved `..data` just before the swap still finds its file.

Every path is opened relative to a directory descriptor without following links (the pod owns
directories above the mount and may plant links there; the kubelet is root): nothing is ever
written outside the pod directory. Pure file system work, no asyncio: the runtime calls it,
in a thread for refreshes.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

DATA = "..data"
DATA_TMP = "..data_tmp"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TS_PREFIX = ".."  # then the UTC time and a random suffix, as Kubernetes names them


class ProjectionError(ValueError):
    """A path a volume cannot have (the message names it)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a version: its bytes, mode and owner (None: the kubelet's)."""

    data: bytes
    mode: int
    owner: tuple[int, int] | None = None


def clean_path(path: str) -> str:
    """`path` normalised; ProjectionError unless it is relative, free of `..` and not
    starting with `..` (the writer's own names), as Kubernetes' validatePath."""
    norm = posixpath.normpath(path) if path else ""
    parts = norm.split("/")
    if not path or path.startswith("/") or norm in (".", "") or ".." in parts:
        raise ProjectionError(f"item path {path!r}: must be relative, without '..'")
    if parts[0].startswith(".."):
        raise ProjectionError(f"item path {path!r}: must not start with '..'")
    return norm


@contextlib.contextmanager
def open_dir(base: str, rel: str, owner: tuple[int, int] | None) -> Iterator[int]:
    """A descriptor of the mount directory `base`/`rel`, each component opened without
    following a link and made when missing (owned by `owner`; None: the kubelet's), the mount
    directory itself the kubelet's, 0755: read-only to the pod, as Kubernetes mounts these
    volumes. ProjectionError on a link or a file on the way, or for `base` itself."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ProjectionError("must be a directory inside the pod dir")
    fd = os.open(base, _DIR)
    try:
        for i, part in enumerate(parts):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
                if owner is not None and i < len(parts) - 1:
                    os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:  # ELOOP (a link), ENOTDIR (a file)
                raise ProjectionError(f"{part!r} is not a directory (a link?)") from exc
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):  # an earlier layout's
            os.fchown(fd, os.geteuid(), os.getegid())
        os.fchmod(fd, 0o755)
        yield fd
    finally:
        os.close(fd)


def _read_tree(fd: int, prefix: str = "") -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for entry in os.scandir(fd):
        name = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(entry.name, _DIR, dir_fd=fd)
            try:
                out.update(_read_tree(sub, name + "/"))
            finally:
                os.close(sub)
            continue
        ffd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        with os.fdopen(ffd, "rb") as f:
            st = os.fstat(f.fileno())
            out[name] = Entry(f.read(), stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid))
    return out


def _current(mount: int) -> str:
    """The timestamped directory `..data` names ("" when there is none)."""
    try:
        target = os.readlink(DATA, dir_fd=mount)
    except OSError:
        return ""
    return target if target.startswith(_TS_PREFIX) and "/" not in target else ""


def current_files(mount: int) -> dict[str, Entry] | None:
    """The files of the version `..data` names (None: no version yet)."""
    name = _current(mount)
    if not name:
        return None
    try:
        fd = os.open(name, _DIR, dir_fd=mount)
    except OSError:
        return None
    try:
        return _read_tree(fd)
    finally:
        os.close(fd)


def _owned(files: Mapping[str, Entry]) -> dict[str, Entry]:
    """`files` with the kubelet's own ids where no owner is given (to compare with disk)."""
    me = (os.geteuid(), os.getegid())
    return {p: Entry(e.data, e.mode & 0o7777, e.owner or me) for p, e in files.items()}


def _write_file(parent: int, name: str, entry: Entry) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=parent)  # fmt: skip
    with os.fdopen(fd, "wb") as out:
        out.write(entry.data)
        if entry.owner is not None:
            os.fchown(out.fileno(), *entry.owner)
        os.fchmod(out.fileno(), entry.mode & 0o7777)


def _write_version(mount: int, files: Mapping[str, Entry]) -> str:
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    name = f"{_TS_PREFIX}{stamp}.{os.urandom(4).hex()}"
    os.mkdir(name, 0o755, dir_fd=mount)
    top = os.open(name, _DIR, dir_fd=mount)
    try:
        os.fchmod(top, 0o755)
        for path, entry in sorted(files.items()):
            *dirs, leaf = path.split("/")
            with contextlib.ExitStack() as stack:
                fd = top
                for d in dirs:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(d, 0o755, dir_fd=fd)
                    fd = os.open(d, _DIR, dir_fd=fd)
                    stack.callback(os.close, fd)
                _write_file(fd, leaf, entry)
    except BaseException:
        os.close(top)
        shutil.rmtree(name, dir_fd=mount, ignore_errors=True)
        raise
    os.close(top)
    return name


def _remove(mount: int, name: str) -> None:
    """Remove `name` in `mount` (a link or file unlinked, a directory's tree removed)."""
    try:
        st = os.stat(name, dir_fd=mount, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=mount)
    else:
        os.unlink(name, dir_fd=mount)


def _link(mount: int, name: str) -> None:
    """`name` -> ..data/`name`, replacing whatever else is there (an earlier layout's file)."""
    target = f"{DATA}/{name}"
    with contextlib.suppress(OSError):
        if os.readlink(name, dir_fd=mount) == target:
            return
    _remove(mount, name)
    os.symlink(target, name, dir_fd=mount)


def write(mount: int, files: Mapping[str, Entry]) -> bool:
    """Make the directory `mount` show exactly `files` (paths from `clean_path`); False when
    it already did (nothing written). Keeps the version it replaces, removes older ones."""
    wanted = _owned(files)
    now = current_files(mount)
    if now == wanted:
        return False
    old = _current(mount)
    old_tops = set(now or {})
    name = _write_version(mount, wanted)
    tops = {p.split("/", 1)[0] for p in wanted}
    for top in sorted(tops):
        _link(mount, top)
    _remove(mount, DATA_TMP)
    os.symlink(name, DATA_TMP, dir_fd=mount)
    os.rename(DATA_TMP, DATA, src_dir_fd=mount, dst_dir_fd=mount)
    for gone in {p.split("/", 1)[0] for p in old_tops} - tops:
        with contextlib.suppress(OSError):
            if os.readlink(gone, dir_fd=mount) == f"{DATA}/{gone}":
                os.unlink(gone, dir_fd=mount)
    for entry in os.listdir(mount):
        if entry.startswith(_TS_PREFIX) and entry not in (DATA, DATA_TMP, name, old):
            _remove(mount, entry)
    return True
