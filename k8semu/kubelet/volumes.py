"""The files of a container's configMap, secret and emptyDir volumes, relative to the pod
directory (a mountPath `/etc/config` becomes `<pod dir>/etc/config`).

Pure: the caller hands over the ConfigMaps and Secrets it read; the runtime writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping

from k8semu.kubelet.env import EnvError, config_map_data, secret_data
from k8semu.kubelet.runtime import VolumeFile
from k8semu.pb.api.v1 import core_pb2

DEFAULT_MODE = 0o644


def _join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel.lstrip('/')}"


def volume_files(
    pod: core_pb2.Pod,
    container: core_pb2.Container,
    *,
    config_maps: Mapping[str, core_pb2.ConfigMap],
    secrets: Mapping[str, core_pb2.Secret],
    where: str = "",
) -> list[VolumeFile]:
    """The files and directories (paths ending in "/") `container`'s mounts need."""
    where = where or f"container {container.name!r}"
    volumes = {v.name: v for v in pod.spec.volumes}
    files: list[VolumeFile] = []
    for i, mount in enumerate(container.volume_mounts):
        path = f"{where}.volumeMounts[{i}]"
        vol = volumes.get(mount.name)
        if vol is None:
            raise EnvError(f"{path}.name: volume {mount.name!r} not found in spec.volumes")
        if not mount.mount_path:
            raise EnvError(f"{path}.mountPath: Required value")
        base = _join(mount.mount_path, mount.sub_path) if mount.sub_path else mount.mount_path
        data: dict[str, bytes] = {}
        items: list[core_pb2.KeyToPath] = []
        mode = DEFAULT_MODE
        if vol.HasField("config_map"):
            src = vol.config_map
            cm = config_maps.get(src.name)
            if cm is None and not src.optional:
                raise EnvError(f'{path}: volume {vol.name!r}: configmap "{src.name}" not found')
            if cm is not None:
                data = config_map_data(cm)
            items = list(src.items)
            mode = src.default_mode if src.HasField("default_mode") else DEFAULT_MODE
        elif vol.HasField("secret"):
            ssrc = vol.secret
            secret = secrets.get(ssrc.secret_name)
            if secret is None and not ssrc.optional:
                raise EnvError(
                    f'{path}: volume {vol.name!r}: secret "{ssrc.secret_name}" not found'
                )
            if secret is not None:
                data = secret_data(secret)
            items = list(ssrc.items)
            mode = ssrc.default_mode if ssrc.HasField("default_mode") else DEFAULT_MODE
        files.append(VolumeFile(base.rstrip("/") + "/", b""))
        if items:
            for item in items:
                if item.key not in data:
                    raise EnvError(f"{path}: volume {vol.name!r}: key {item.key!r} not found")
                item_mode = item.mode if item.HasField("mode") else mode
                files.append(
                    VolumeFile(_join(base, item.path or item.key), data[item.key], item_mode)
                )
        else:
            for key in sorted(data):
                files.append(VolumeFile(_join(base, key), data[key], mode))
    return files
