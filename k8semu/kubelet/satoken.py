"""The ServiceAccount token mount: /var/run/secrets/kubernetes.io/serviceaccount/ with
`token` (a token bound to the pod, from the serviceaccounts/token subresource), `ca.crt`
(the kube-root-ca.crt ConfigMap of the pod's namespace, empty when there is none) and
`namespace`, in every container, as Kubernetes' ServiceAccount admission and kubelet do.

Mounted unless the pod's automountServiceAccountToken (else its ServiceAccount's) is false.
When the API server signs no tokens (started without --service-account-signing-key-file,
the emulator's default) or the ServiceAccount does not exist, nothing is mounted and the
pod runs as before; the answer is remembered a while so pods do not each ask again.
Tokens are requested for `TOKEN_SECONDS` and bound to the pod: deleting the pod (or its
ServiceAccount) revokes them. Written once per container start (no rotation), with the
`..data` layout of projected volumes.
"""

from __future__ import annotations

import contextlib
import time

from k8semu.client import ClientError, NotFound, Unimplemented, request_token
from k8semu.client._client import Client
from k8semu.kubelet.env import EnvError
from k8semu.kubelet.runtime import Projection, VolumeFile
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_SECONDS = 24 * 3600
_UNSUPPORTED_FOR = 30.0  # seconds a "no tokens here" answer is trusted
NO_SIGNING_KEY = "--service-account-signing-key-file"  # in the API server's NotFound


class TokenMounter:
    """One per kubelet node."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._unsupported_until = 0.0

    async def _automount(self, pod: core_pb2.Pod) -> bool:
        if pod.spec.HasField("automount_service_account_token"):
            return pod.spec.automount_service_account_token
        try:
            sa = await self.client.get(
                core_pb2.ServiceAccount,
                pod.spec.service_account_name or "default",
                namespace=pod.metadata.namespace,
            )
        except NotFound:
            return False
        if sa.HasField("automount_service_account_token"):
            return sa.automount_service_account_token
        return True

    async def files(self, pod: core_pb2.Pod) -> list[VolumeFile]:
        """The mount's files for `pod` ([] when none is mounted); EnvError when the API
        server could not be asked (the container waits and tries again)."""
        if time.monotonic() < self._unsupported_until:
            return []
        ns = pod.metadata.namespace
        try:
            if not await self._automount(pod):
                return []
            token, _ = await request_token(
                self.client, pod.spec.service_account_name or "default", namespace=ns,
                pod=pod, expiration_seconds=TOKEN_SECONDS,
            )  # fmt: skip
            ca = b""
            with contextlib.suppress(NotFound):
                cm = await self.client.get(core_pb2.ConfigMap, ROOT_CA_CONFIGMAP, namespace=ns)
                ca = cm.data.get("ca.crt", "").encode()
        except (NotFound, Unimplemented) as exc:
            if isinstance(exc, NotFound) and NO_SIGNING_KEY not in str(exc):
                raise EnvError(f"service account token: {exc}") from exc  # not yet seen
            self._unsupported_until = time.monotonic() + _UNSUPPORTED_FOR
            log.info("no service account token mounted", pod=f"{ns}/{pod.metadata.name}",
                     reason=str(exc))  # fmt: skip
            return []
        except ClientError as exc:
            raise EnvError(f"service account token: {exc}") from exc
        return [
            VolumeFile(f"{MOUNT_PATH}/", b""),
            VolumeFile(f"{MOUNT_PATH}/token", token.encode(), 0o400),  # the pod user's only
            VolumeFile(f"{MOUNT_PATH}/ca.crt", ca),
            VolumeFile(f"{MOUNT_PATH}/namespace", ns.encode()),
        ]

    async def projections(self, pod: core_pb2.Pod) -> list[Projection]:
        """The mount as a projection (the `..data` layout of every projected volume)."""
        files = await self.files(pod)
        inside = tuple(
            VolumeFile(f.path.removeprefix(MOUNT_PATH + "/"), f.data, f.mode)
            for f in files
            if not f.path.endswith("/")
        )
        return [Projection(MOUNT_PATH, inside)] if files else []
