"""The files of a container's volumes, relative to the pod directory (a mountPath
`/etc/config` becomes `<pod dir>/etc/config`).

- configMap, secret, downwardAPI and projected (configMap, secret and downwardAPI sources):
  a `Projection` of the mount path (written with Kubernetes' atomic `..data` layout, and
  written again while the pod runs when the objects change: kubelet/refresh.py); with a
  subPath, a copy of that entry at the mount path, written when the container starts only
  (Kubernetes does not update subPath mounts either);
- emptyDir: a directory in the pod directory; with `medium: Memory`, a link to a directory
  under `memory_dir` (/dev/shm, a tmpfs);
- persistentVolumeClaim and hostPath: a link to the host directory (the bound volume's, from
  `claims`, or the hostPath's). A process runtime has no mount namespace, so a link is the
  honest way to make a directory appear at the mount path: a container that writes to its
  mount path writes into the volume's directory, which outlives the pod.

Pure: the caller hands over the ConfigMaps, Secrets and claim directories it read; the
runtime writes the files and links.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from k8semu.api.quantity import parse_quantity
from k8semu.kubelet.config import KubeletConfig
from k8semu.kubelet.env import EnvError, PodFacts, config_map_data, field_ref, secret_data
from k8semu.kubelet.runtime import Projection, VolumeFile
from k8semu.pb.api.v1 import core_pb2

DEFAULT_MODE = 0o644  # configMap, downwardAPI, projected files (Kubernetes' default)
# A Secret's files: readable by the pod's own user only (issue 16; Kubernetes says 0644, but
# here the pod directory, not a mount namespace, is what keeps other pods out).
SECRET_MODE = 0o400
# The node annotation naming the directory its local volumes are provisioned in (read by
# k8semu/controllers/persistentvolume.py, which keeps its own copy of the name).
LOCAL_STORAGE_DIR_ANNOTATION = "k8semu.io/local-storage-dir"
LINKED = ("persistent_volume_claim", "host_path")
PROJECTED = ("config_map", "secret", "downward_api", "projected")  # written from objects
MEMORY_DIR = "/dev/shm"  # a tmpfs: emptyDir medium Memory lives here (removed with the pod)


def memory_dir_of(uid: str, memory_dir: str = MEMORY_DIR) -> str:
    return os.path.join(memory_dir, f"k8semu-{uid}")


def _join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel.lstrip('/')}"


def local_storage_dir(config: KubeletConfig) -> str:
    return os.path.abspath(os.path.join(config.effective_root_dir, "volumes"))


def size_limits(
    pod: core_pb2.Pod, pod_dir: str, memory_dir: str = MEMORY_DIR
) -> list[tuple[str, list[str], int, str]]:
    """(volume, its directories, limit in bytes, the limit as written) of each emptyDir with
    a sizeLimit: the memory directory, or each mount path of a disk emptyDir."""
    out = []
    mounts = [m for c in [*pod.spec.init_containers, *pod.spec.containers] for m in c.volume_mounts]
    for vol in pod.spec.volumes:
        text = vol.empty_dir.size_limit
        if not vol.HasField("empty_dir") or not text:
            continue
        limit = int(parse_quantity(text, field=f"volume {vol.name!r}: sizeLimit").amount)
        if vol.empty_dir.medium == "Memory":
            dirs = [os.path.join(memory_dir_of(pod.metadata.uid, memory_dir), vol.name)]
        else:
            dirs = [os.path.join(pod_dir, m.mount_path.lstrip("/")) for m in mounts
                    if m.name == vol.name]  # fmt: skip
        out.append((vol.name, dirs, limit, text))
    return out


def claim_names(pod: core_pb2.Pod) -> list[str]:
    return [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if
            v.HasField("persistent_volume_claim")]  # fmt: skip


def _keyed(
    data: Mapping[str, bytes],
    items: Iterable[core_pb2.KeyToPath],
    mode: int,
    what: str,
    optional: bool = False,
) -> list[tuple[str, bytes, int]]:
    """(relative path, bytes, mode) of a configMap/secret source: its items, else every key;
    an item's missing key is an error unless the source is optional (then left out)."""
    chosen = list(items)
    if not chosen:
        return [(key, data[key], mode) for key in sorted(data)]
    out = []
    for item in chosen:
        if item.key not in data and optional:
            continue
        if item.key not in data:
            raise EnvError(f"{what}: key {item.key!r} not found")
        out.append((item.path or item.key, data[item.key], item.mode if item.HasField("mode")
                    else mode))  # fmt: skip
    return out


def _downward(
    pod: core_pb2.Pod, facts: PodFacts, items: Iterable[core_pb2.DownwardAPIVolumeFile], mode: int
) -> list[tuple[str, bytes, int]]:
    return [(item.path, field_ref(pod, facts, item.field_ref.field_path).encode(),
             item.mode if item.HasField("mode") else mode) for item in items]  # fmt: skip


def _lookup(
    found: Mapping[str, bytes] | None, name: str, optional: bool, what: str
) -> Mapping[str, bytes]:
    if found is None and not optional:
        raise EnvError(f'{what} "{name}" not found')
    return found or {}


def _source_files(
    vol: core_pb2.Volume,
    pod: core_pb2.Pod,
    facts: PodFacts,
    config_maps: Mapping[str, core_pb2.ConfigMap],
    secrets: Mapping[str, core_pb2.Secret],
    what: str,
) -> list[tuple[str, bytes, int]]:
    """The files of a configMap, secret, downwardAPI or projected volume ([] for others)."""

    def cm(name: str, optional: bool) -> Mapping[str, bytes]:
        got = config_maps.get(name)
        return _lookup(None if got is None else config_map_data(got), name, optional,
                       f"{what}: configmap")  # fmt: skip

    def sec(name: str, optional: bool) -> Mapping[str, bytes]:
        got = secrets.get(name)
        return _lookup(None if got is None else secret_data(got), name, optional,
                       f"{what}: secret")  # fmt: skip

    def mode_of(
        src: core_pb2.ConfigMapVolumeSource
        | core_pb2.SecretVolumeSource
        | core_pb2.DownwardAPIVolumeSource
        | core_pb2.ProjectedVolumeSource,
        default: int = DEFAULT_MODE,
    ) -> int:
        return src.default_mode if src.HasField("default_mode") else default

    if vol.HasField("config_map"):
        src = vol.config_map
        return _keyed(cm(src.name, src.optional), src.items, mode_of(src), what, src.optional)
    if vol.HasField("secret"):
        ssrc = vol.secret
        return _keyed(sec(ssrc.secret_name, ssrc.optional), ssrc.items,
                      mode_of(ssrc, SECRET_MODE), what, ssrc.optional)  # fmt: skip
    if vol.HasField("downward_api"):
        return _downward(pod, facts, vol.downward_api.items, mode_of(vol.downward_api))
    out: list[tuple[str, bytes, int]] = []
    mode = mode_of(vol.projected)
    for s in vol.projected.sources:
        if s.HasField("config_map"):
            out += _keyed(cm(s.config_map.name, s.config_map.optional), s.config_map.items,
                          mode, what, s.config_map.optional)  # fmt: skip
        elif s.HasField("secret"):
            out += _keyed(sec(s.secret.name, s.secret.optional), s.secret.items,
                          mode_of(vol.projected, SECRET_MODE), what, s.secret.optional)  # fmt: skip
        elif s.HasField("downward_api"):
            out += _downward(pod, facts, s.downward_api.items, mode)
    return out


def _link_target(
    vol: core_pb2.Volume, pod: core_pb2.Pod, claims: Mapping[str, str], memory_dir: str
) -> str:
    """The host directory a linked volume shows ("" for a volume written in place)."""
    if vol.HasField("persistent_volume_claim"):
        return claims.get(vol.persistent_volume_claim.claim_name, "")
    if vol.HasField("host_path"):
        return vol.host_path.path
    if vol.HasField("empty_dir") and vol.empty_dir.medium == "Memory":
        return os.path.join(memory_dir_of(pod.metadata.uid, memory_dir), vol.name)
    return ""


@dataclass(slots=True)
class Mounts:
    """What a container's mounts need: plain files, directories (paths ending in "/") and
    links, and the projections (written atomically, refreshed while the pod runs)."""

    files: list[VolumeFile] = field(default_factory=list)
    projections: list[Projection] = field(default_factory=list)


def _sub_path_copy(
    mount_path: str, sub: str, src: list[tuple[str, bytes, int]]
) -> list[VolumeFile]:
    """The entry `sub` of a projected volume at `mount_path`: a file, or a directory of the
    files under it (an empty directory when there is none, as Kubernetes makes it)."""
    sub = sub.strip("/")
    base = mount_path.rstrip("/")
    exact = [VolumeFile(base, data, mode) for rel, data, mode in src if rel == sub]
    if exact:
        return exact
    under = [VolumeFile(_join(base, rel[len(sub) + 1 :]), data, mode)
             for rel, data, mode in src if rel.startswith(sub + "/")]  # fmt: skip
    return [VolumeFile(base + "/", b""), *under]


def _mount_of(
    pod: core_pb2.Pod, container: core_pb2.Container, i: int, where: str
) -> tuple[core_pb2.VolumeMount, core_pb2.Volume]:
    mount = container.volume_mounts[i]
    path = f"{where}.volumeMounts[{i}]"
    vol = {v.name: v for v in pod.spec.volumes}.get(mount.name)
    if vol is None:
        raise EnvError(f"{path}.name: volume {mount.name!r} not found in spec.volumes")
    if not mount.mount_path:
        raise EnvError(f"{path}.mountPath: Required value")
    return mount, vol


def _is_projected(vol: core_pb2.Volume) -> bool:
    return any(vol.HasField(name) for name in PROJECTED)  # type: ignore[arg-type]


def refreshed_mounts(pod: core_pb2.Pod, container: core_pb2.Container) -> list[int]:
    """The indexes of `container`'s mounts that follow their objects while it runs: the
    projected kinds without a subPath."""
    volumes = {v.name: v for v in pod.spec.volumes}
    return [i for i, m in enumerate(container.volume_mounts)
            if not m.sub_path and m.name in volumes and _is_projected(volumes[m.name])]  # fmt: skip


# The ConfigMaps and Secrets a pod's volumes are made from, by name.
Objects = tuple[Mapping[str, core_pb2.ConfigMap], Mapping[str, core_pb2.Secret]]


def projection_of(
    pod: core_pb2.Pod, container: core_pb2.Container, i: int, objects: Objects, facts: PodFacts,
    where: str,
) -> Projection:  # fmt: skip
    """The projection of `container`'s mount `i` (one of `refreshed_mounts`) from these
    objects; EnvError naming the mount when an object or key it needs is missing."""
    mount, vol = _mount_of(pod, container, i, where)
    what = f"{where}.volumeMounts[{i}]: volume {vol.name!r}"
    src = _source_files(vol, pod, facts, objects[0], objects[1], what)
    files = tuple(VolumeFile(rel, data, mode) for rel, data, mode in src)
    return Projection(mount.mount_path.rstrip("/"), files)


def volume_files(
    pod: core_pb2.Pod,
    container: core_pb2.Container,
    *,
    config_maps: Mapping[str, core_pb2.ConfigMap],
    secrets: Mapping[str, core_pb2.Secret],
    facts: PodFacts | None = None,
    claims: Mapping[str, str] | None = None,
    memory_dir: str = MEMORY_DIR,
    where: str = "",
) -> Mounts:
    """What `container`'s mounts need; `claims` maps each persistentVolumeClaim's name to
    its bound volume's directory."""
    where = where or f"container {container.name!r}"
    facts_ = facts or PodFacts(node_name=pod.spec.node_name, pod_ip="", host_ip="")
    out = Mounts()
    for i in range(len(container.volume_mounts)):
        mount, vol = _mount_of(pod, container, i, where)
        path = f"{where}.volumeMounts[{i}]"
        base = _join(mount.mount_path, mount.sub_path) if mount.sub_path else mount.mount_path
        target = _link_target(vol, pod, claims or {}, memory_dir)
        if target:
            if mount.sub_path:
                target = os.path.join(target, mount.sub_path)
            out.files.append(VolumeFile(base.rstrip("/"), b"", link=target))
        elif any(vol.HasField(name) for name in LINKED):  # type: ignore[arg-type]
            raise EnvError(f"{path}: volume {vol.name!r}: claim not bound to a volume yet")
        elif not _is_projected(vol):
            out.files.append(VolumeFile(base.rstrip("/") + "/", b""))
        elif mount.sub_path:
            what = f"{path}: volume {vol.name!r}"
            src = _source_files(vol, pod, facts_, config_maps, secrets, what)
            out.files += _sub_path_copy(mount.mount_path, mount.sub_path, src)
        else:
            objects = (config_maps, secrets)
            out.projections.append(projection_of(pod, container, i, objects, facts_, where))
    return out
