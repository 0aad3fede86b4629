"""The CertificateSigningRequest loops of kube-controller-manager: `csrapproving` approves
what k8semu/api/csr.py `auto_approvable` allows (a joining node's kubelet client request from
a bootstrapper, its proxy's, a node's renewal or serving request for itself) and leaves the
rest pending, as Kubernetes does; `csrsigning` signs approved requests of the kubelet client,
kube-apiserver client and kubelet serving signers with the cluster CA (`--cluster-signing-
cert-file/--cluster-signing-key-file`), or marks them Failed when the signer refuses them
(`csr.problem`). Without a signing CA (a plain cluster) nothing is signed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from k8semu import pki
from k8semu.api import csr as csrs
from k8semu.api import timestamps
from k8semu.client import Conflict, NotFound
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import certificates_pb2, core_pb2

log = get_logger(__name__)
CSR = certificates_pb2.CertificateSigningRequest


class _Loop(KeyedController):
    """One informer on CertificateSigningRequests and a queue of their names."""

    name = ""

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.csrs = ctx.informers.informer(CSR)
        self.watch(self.csrs, self._enqueue)

    async def reconcile(self, key: str) -> None:
        obj = self.csrs.cache.get(key)
        if obj is None or obj.status.certificate:
            return
        if csrs.condition(obj, csrs.DENIED) or csrs.condition(obj, csrs.FAILED):
            return
        changed = self.decide(obj)
        if changed is None:
            return
        try:
            await self.client.update_status(changed)
        except (Conflict, NotFound):  # changed or gone meanwhile: the next event re-checks
            return
        log.info(f"{self.name}: {changed.status.conditions[-1].type}", csr=key)

    def decide(self, obj: CSR) -> CSR | None:
        raise NotImplementedError


def _with_condition(obj: CSR, kind: str, reason: str, message: str) -> CSR:
    new = CSR()
    new.CopyFrom(obj)
    now = timestamps.now()
    new.status.conditions.add(
        type=kind, status="True", reason=reason, message=message, last_update_time=now,
        last_transition_time=now,
    )  # fmt: skip
    return new


class CSRApprovingController(_Loop):
    name = "csrapproving"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.nodes = ctx.informers.informer(core_pb2.Node)

    def _registered(self, node: str) -> bool:
        return self.nodes.cache.get(node) is not None

    def decide(self, obj: CSR) -> CSR | None:
        if csrs.condition(obj, csrs.APPROVED):
            return None
        if not csrs.auto_approvable(obj, self._registered):
            return None
        return _with_condition(
            obj, csrs.APPROVED, "AutoApproved", f"Auto approving {obj.spec.signer_name} request"
        )


class CSRSigningController(_Loop):
    name = "csrsigning"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ca: pki.CertificateAuthority | None = None
        cert, key = ctx.config.signing_cert, ctx.config.signing_key
        if cert and key:
            loaded_key = serialization.load_pem_private_key(key.encode(), password=None)
            if not isinstance(loaded_key, ec.EllipticCurvePrivateKey):
                raise ValueError("--cluster-signing-key-file: expected an EC private key")
            ca_cert = x509.load_pem_x509_certificate(cert.encode())
            self.ca = pki.CertificateAuthority(Path("."), loaded_key, ca_cert)

    def decide(self, obj: CSR) -> CSR | None:
        if self.ca is None or not csrs.condition(obj, csrs.APPROVED):
            return None
        if obj.spec.signer_name not in _SPECS:
            return None  # another signer's
        problem = csrs.problem(obj)
        if problem is not None:
            return _with_condition(obj, csrs.FAILED, "SignerValidationFailure", problem)
        req = csrs.parse_request(obj.spec.request)  # problem() parsed it already
        key = req.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            reason = "only ECDSA keys are signed here"
            return _with_condition(obj, csrs.FAILED, "SignerValidationFailure", reason)
        cert = self.ca.sign(_SPECS[obj.spec.signer_name](req), key)
        new = CSR()
        new.CopyFrom(obj)
        new.status.certificate = cert.public_bytes(serialization.Encoding.PEM)
        return new


def _spec(server: bool) -> Callable[[x509.CertificateSigningRequest], pki.CertSpec]:
    def spec(req: x509.CertificateSigningRequest) -> pki.CertSpec:
        cn, orgs = csrs.subject(req)
        dns, ips, _ = csrs.names(req)
        return pki.CertSpec("csr", cn, orgs, hosts=(*dns, *ips), server=server, client=not server)

    return spec


_SPECS = {
    csrs.KUBELET_CLIENT: _spec(False),
    csrs.APISERVER_CLIENT: _spec(False),
    csrs.KUBELET_SERVING: _spec(True),
}
