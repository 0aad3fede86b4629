"""A container's environment and argv, as Kubernetes builds them.

Order (later entries win): the emulator's POD_NAME/POD_NAMESPACE/POD_IP/NODE_NAME/HOSTNAME
and the cluster DNS (`dns_env`),
Kubernetes' service variables (`{SVC}_SERVICE_HOST`, ..., for the Services of the pod's
namespace that exist when the container starts, and `KUBERNETES_SERVICE_*` for the
`kubernetes` service in `default`), then `envFrom` in order, then `env` in order. `$(VAR)` in an
`env` value refers to variables defined before it; in command and args to the whole
environment; `$$` escapes; unknown references stay as written.

Pure: the caller hands over the ConfigMaps, Secrets and Services it read. A missing,
non-optional reference raises EnvError naming the field (the kubelet reports it as the
container's CreateContainerConfigError).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from k8semu.pb.api.v1 import core_pb2

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvError(ValueError):
    """A reference the container's environment cannot be built without."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodFacts:
    """What `fieldRef` may read about the pod besides its spec."""

    pod_ip: str
    host_ip: str
    node_name: str
    dns_server: str = ""  # the cluster DNS (kubelet --cluster-dns), "" when there is none
    cluster_domain: str = "cluster.local"


def dns_env(pod: core_pb2.Pod, facts: PodFacts) -> dict[str, str]:
    """Where the pod's resolver goes. A process cannot be given its own resolv.conf, so the
    kubelet says it in the environment and the built-in images' clients (wget, nslookup,
    loadgen) resolve through it: K8SEMU_DNS_SERVER (HOST:53) and K8SEMU_DNS_SEARCH (the
    search path Kubernetes writes for ClusterFirst). dnsPolicy Default, or hostNetwork without
    ClusterFirstWithHostNet, uses the host's resolver, as in Kubernetes."""
    policy = pod.spec.dns_policy or "ClusterFirst"
    if not facts.dns_server or policy in ("Default", "None"):
        return {}
    if pod.spec.host_network and policy != "ClusterFirstWithHostNet":
        return {}
    domain = facts.cluster_domain
    ns = pod.metadata.namespace or "default"
    server = facts.dns_server if ":" in facts.dns_server else f"{facts.dns_server}:53"
    return {
        "K8SEMU_DNS_SERVER": server,
        "K8SEMU_DNS_SEARCH": f"{ns}.svc.{domain} svc.{domain} {domain}",
    }


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: `$(X)` -> env[X] when defined, `$$` -> `$`."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _svc_prefix(name: str) -> str:
    return name.upper().replace("-", "_")


def service_env(services: Iterable[core_pb2.Service], namespace: str) -> dict[str, str]:
    """Docker-links-style variables for each Service with a cluster IP, as the kubelet injects:
    {SVC}_SERVICE_HOST, {SVC}_SERVICE_PORT[_{PORTNAME}], {SVC}_PORT, {SVC}_PORT_{P}_{PROTO}[...].
    Services of `namespace`, plus `kubernetes` from `default`."""
    env: dict[str, str] = {}
    chosen = sorted(
        (
            s
            for s in services
            if s.metadata.namespace == namespace
            or (s.metadata.namespace == "default" and s.metadata.name == "kubernetes")
        ),
        key=lambda s: (s.metadata.namespace != namespace, s.metadata.name),
    )
    for svc in chosen:
        ip = svc.spec.cluster_ip
        if not ip or ip == "None" or not svc.spec.ports:
            continue
        prefix = _svc_prefix(svc.metadata.name)
        if f"{prefix}_SERVICE_HOST" in env:
            continue  # the pod's own namespace wins over default's `kubernetes`
        first = svc.spec.ports[0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first.port)
        for port in svc.spec.ports:
            if port.name:
                env[f"{prefix}_SERVICE_PORT_{_svc_prefix(port.name)}"] = str(port.port)
        proto = (first.protocol or "TCP").lower()
        env[f"{prefix}_PORT"] = f"{proto}://{ip}:{first.port}"
        for port in svc.spec.ports:
            p = (port.protocol or "TCP").upper()
            base = f"{prefix}_PORT_{port.port}_{p}"
            env[base] = f"{p.lower()}://{ip}:{port.port}"
            env[f"{base}_PROTO"] = p.lower()
            env[f"{base}_PORT"] = str(port.port)
            env[f"{base}_ADDR"] = ip
    return env


def field_ref(pod: core_pb2.Pod, facts: PodFacts, path: str) -> str:
    """The value of a `fieldRef.fieldPath`; EnvError for an unsupported path."""
    m = pod.metadata
    simple = {
        "metadata.name": m.name,
        "metadata.namespace": m.namespace,
        "metadata.uid": m.uid,
        "spec.nodeName": pod.spec.node_name or facts.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        source = m.labels if match.group(1) == "labels" else m.annotations
        return source.get(match.group(2), "")
    raise EnvError(f"fieldPath {path!r}: unsupported (supported: {', '.join(sorted(simple))})")


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def config_map_data(cm: core_pb2.ConfigMap) -> dict[str, bytes]:
    """A ConfigMap's data and binaryData together, as bytes (binaryData wins a shared key)."""
    return {**{k: v.encode() for k, v in cm.data.items()}, **cm.binary_data}


def secret_data(secret: core_pb2.Secret) -> dict[str, bytes]:
    """A Secret's data and stringData together, as bytes (stringData wins a shared key, as
    the API server merges it)."""
    return {**secret.data, **{k: v.encode() for k, v in secret.string_data.items()}}


def _env_source(
    source: core_pb2.EnvFromSource,
    path: str,
    config_maps: Mapping[str, core_pb2.ConfigMap],
    secrets: Mapping[str, core_pb2.Secret],
) -> dict[str, str]:
    """The variables one envFrom source brings ({} when it is optional and missing)."""
    if source.HasField("config_map_ref"):
        name, optional = source.config_map_ref.name, source.config_map_ref.optional
        cm = config_maps.get(name)
        data = None if cm is None else config_map_data(cm)
        missing = f'{path}.configMapRef: configmap "{name}" not found'
    elif source.HasField("secret_ref"):
        name, optional = source.secret_ref.name, source.secret_ref.optional
        secret = secrets.get(name)
        data = None if secret is None else secret_data(secret)
        missing = f'{path}.secretRef: secret "{name}" not found'
    else:
        return {}
    if data is None:
        if optional:
            return {}
        raise EnvError(missing)
    return {key: _decode(value) for key, value in data.items()}


def container_env(
    pod: core_pb2.Pod,
    container: core_pb2.Container,
    facts: PodFacts,
    *,
    config_maps: Mapping[str, core_pb2.ConfigMap],
    secrets: Mapping[str, core_pb2.Secret],
    services: Iterable[core_pb2.Service] = (),
    where: str = "",
) -> dict[str, str]:
    """The environment of `container` (without the kubelet's own process variables such as
    PATH). `config_maps`/`secrets` hold those of the pod's namespace that exist, by name;
    `where` is the container's field path for errors (`spec.containers[0]`)."""
    where = where or f"container {container.name!r}"
    env: dict[str, str] = {
        "HOSTNAME": pod.spec.hostname or pod.metadata.name,
        "POD_NAME": pod.metadata.name,
        "POD_NAMESPACE": pod.metadata.namespace,
        "POD_IP": facts.pod_ip,
        "NODE_NAME": facts.node_name,
    }
    env.update(dns_env(pod, facts))
    env.update(service_env(services, pod.metadata.namespace))
    for i, source in enumerate(container.env_from):
        data = _env_source(source, f"{where}.envFrom[{i}]", config_maps, secrets)
        for key, value in data.items():
            name = source.prefix + key
            if _ENV_NAME_RE.fullmatch(name):  # Kubernetes skips invalid names (with an event)
                env[name] = value
    for i, var in enumerate(container.env):
        path = f"{where}.env[{i}]"
        if not var.name:
            raise EnvError(f"{path}.name: Required value")
        if var.HasField("value_from"):
            env[var.name] = _value_from(pod, facts, var.value_from, path, config_maps, secrets)
        else:
            env[var.name] = expand(var.value, env)
    return env


def _value_from(
    pod: core_pb2.Pod,
    facts: PodFacts,
    source: core_pb2.EnvVarSource,
    path: str,
    config_maps: Mapping[str, core_pb2.ConfigMap],
    secrets: Mapping[str, core_pb2.Secret],
) -> str:
    if source.HasField("field_ref"):
        try:
            return field_ref(pod, facts, source.field_ref.field_path)
        except EnvError as exc:
            raise EnvError(f"{path}.valueFrom.fieldRef: {exc}") from None
    if source.HasField("config_map_key_ref"):
        ref = source.config_map_key_ref
        cm = config_maps.get(ref.name)
        if cm is not None and ref.key in cm.data:
            return cm.data[ref.key]
        if cm is not None and ref.key in cm.binary_data:
            return _decode(cm.binary_data[ref.key])
        if ref.optional:
            return ""
        what = (
            f'configmap "{ref.name}" not found'
            if cm is None
            else (f'key "{ref.key}" not found in configmap "{ref.name}"')
        )
        raise EnvError(f"{path}.valueFrom.configMapKeyRef: {what}")
    if source.HasField("secret_key_ref"):
        sref = source.secret_key_ref
        secret = secrets.get(sref.name)
        if secret is not None and sref.key in secret.data:
            return _decode(secret.data[sref.key])
        if secret is not None and sref.key in secret.string_data:
            return secret.string_data[sref.key]
        if sref.optional:
            return ""
        what = (
            f'secret "{sref.name}" not found'
            if secret is None
            else (f'key "{sref.key}" not found in secret "{sref.name}"')
        )
        raise EnvError(f"{path}.valueFrom.secretKeyRef: {what}")
    raise EnvError(f"{path}.valueFrom: one of fieldRef, configMapKeyRef, secretKeyRef is required")


def referenced_names(pod: core_pb2.Pod) -> tuple[set[str], set[str]]:
    """The ConfigMap and Secret names the pod's env, envFrom and volumes refer to."""
    cms, secrets = volume_object_names(pod)
    for c in [*pod.spec.init_containers, *pod.spec.containers]:
        for source in c.env_from:
            if source.HasField("config_map_ref"):
                cms.add(source.config_map_ref.name)
            if source.HasField("secret_ref"):
                secrets.add(source.secret_ref.name)
        for var in c.env:
            if var.value_from.HasField("config_map_key_ref"):
                cms.add(var.value_from.config_map_key_ref.name)
            if var.value_from.HasField("secret_key_ref"):
                secrets.add(var.value_from.secret_key_ref.name)
    return cms, secrets


def volume_object_names(pod: core_pb2.Pod) -> tuple[set[str], set[str]]:
    """The ConfigMap and Secret names the pod's volumes refer to."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for vol in pod.spec.volumes:
        if vol.HasField("config_map"):
            cms.add(vol.config_map.name)
        if vol.HasField("secret"):
            secrets.add(vol.secret.secret_name)
        for proj in vol.projected.sources:
            if proj.HasField("config_map"):
                cms.add(proj.config_map.name)
            if proj.HasField("secret"):
                secrets.add(proj.secret.name)
    return cms, secrets


class NoCommand(ValueError):
    """An image that is not built in and a container without a command: nothing to run."""


def command_line(
    container: core_pb2.Container,
    env: Mapping[str, str],
    resolve: Callable[[str, Sequence[str], Sequence[str]], list[str] | None],
) -> list[str]:
    """The argv to run: command and args with `$(VAR)` expanded, then handed to `resolve`
    (k8semu.images.resolve: the built-in image's argv, or None for an unknown image, which
    runs its explicit command). NoCommand when there is nothing to run."""
    command = [expand(a, env) for a in container.command]
    args = [expand(a, env) for a in container.args]
    argv = resolve(container.image, command, args)
    if argv is not None:
        return list(argv)
    if not command:
        # A registry's "not found" first, as a kubelet says it (the tutorials' broken tags).
        raise NoCommand(
            f"image {container.image} is not a built-in image and the container has no command"
            " (k8semu pulls nothing: docs/images.md)"
        )
    return [*command, *args]
