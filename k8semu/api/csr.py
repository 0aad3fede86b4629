"""CertificateSigningRequest facts shared by the API server (checks), the controller manager
(approver and signer) and `k8semu join` (the requests it makes): Kubernetes' signer names,
usages and conditions, and what each signer accepts. Pure: no I/O.

A request for the kubelet client signer is a node's: CN `system:node:<name>`, O exactly
`system:nodes`, no subject alternative names, usages client auth (and digital signature, key
encipherment). k8semu's own rule for the kube-apiserver client signer: CN `system:kube-proxy`,
no O, the same usages (the proxy of a joined node; kubeadm's runs as a ServiceAccount). The
kubelet serving signer: CN and O as the client's, usages server auth (and digital signature,
key encipherment), DNS names and IP addresses only.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import NameOID

from k8semu.pb.api.v1 import certificates_pb2

CSR = certificates_pb2.CertificateSigningRequest
KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
NODE_PREFIX, NODES, PROXY_USER = "system:node:", "system:nodes", "system:kube-proxy"
BOOTSTRAPPERS = "system:bootstrappers"
USAGES = (
    "any", "cert sign", "client auth", "code signing", "content commitment", "crl sign",
    "data encipherment", "decipher only", "digital signature", "email protection",
    "encipher only", "ipsec end system", "ipsec tunnel", "ipsec user", "key agreement",
    "key encipherment", "microsoft sgc", "netscape sgc", "ocsp signing", "s/mime",
    "server auth", "signing", "timestamping",
)  # fmt: skip
_KEY_USAGES = {"digital signature", "key encipherment"}
CLIENT_USAGES = ("digital signature", "client auth")
SERVING_USAGES = ("digital signature", "server auth")


def parse_request(pem: bytes) -> x509.CertificateSigningRequest:
    """The request in `pem`; ValueError with Kubernetes' reason."""
    if not pem.lstrip().startswith(b"-----BEGIN CERTIFICATE REQUEST-----"):
        raise ValueError("PEM block type must be CERTIFICATE REQUEST")
    csr = x509.load_pem_x509_csr(pem)
    if not csr.is_signature_valid:
        raise ValueError("the request's signature is not valid")
    return csr


def condition(csr: CSR, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in csr.status.conditions)


def subject(req: x509.CertificateSigningRequest) -> tuple[str, tuple[str, ...]]:
    """(CN, O...) of a request."""
    cn = [str(a.value) for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(
        str(a.value) for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    )
    return (cn[0] if len(cn) == 1 else ""), orgs


def names(req: x509.CertificateSigningRequest) -> tuple[list[str], list[str], bool]:
    """(DNS names, IP addresses, whether it names anything else) of a request."""
    try:
        sans = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], False
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return dns, ips, len(dns) + len(ips) != len(list(sans))


def problem(csr: CSR) -> str | None:
    """Why the signer of `csr.spec.signer_name` would not sign it (None: it would; also for
    a signer k8semu does not run, which is not its to judge)."""
    spec = csr.spec
    if spec.signer_name not in (KUBELET_CLIENT, APISERVER_CLIENT, KUBELET_SERVING):
        return None
    try:
        req = parse_request(spec.request)
    except ValueError as exc:
        return str(exc)
    cn, orgs = subject(req)
    dns, ips, other = names(req)
    usages = set(spec.usages)
    serving = spec.signer_name == KUBELET_SERVING
    wanted = "server auth" if serving else "client auth"
    if wanted not in usages or usages - _KEY_USAGES - {wanted}:
        return f"usages must be {wanted} (and digital signature, key encipherment)"
    if spec.signer_name == APISERVER_CLIENT:
        return (
            None
            if (cn, orgs) == (PROXY_USER, ()) and not (dns or ips or other)
            else (f"only {PROXY_USER} (no organization, no alternative names) is signed here")
        )
    if not cn.startswith(NODE_PREFIX) or cn == NODE_PREFIX or orgs != (NODES,):
        return f"subject must be CN={NODE_PREFIX}<name>, O={NODES}"
    if other or (not serving and (dns or ips)):
        return "no alternative names but DNS names and IP addresses (and none for a client)"
    if serving and not (dns or ips):
        return "a serving certificate needs a DNS name or an IP address"
    return None


def auto_approvable(csr: CSR, registered: Callable[[str], bool]) -> bool:
    """Whether the approver approves `csr`: a signable request of the kubelet client signer
    for the requester's own node, or from a bootstrapper for a node not `registered` yet (a
    token must not mint the identity of a node that runs: k8semu's rule, Kubernetes leaves
    it to the token's holder); of the kube-apiserver client signer from a bootstrapper; or of
    the kubelet serving signer from that node itself."""
    spec = csr.spec
    if problem(csr) is not None:
        return False
    cn, _ = subject(parse_request(spec.request))
    bootstrapper = BOOTSTRAPPERS in spec.groups
    if spec.signer_name == KUBELET_CLIENT:
        if spec.username == cn and NODES in spec.groups:
            return True
        return bootstrapper and not registered(cn.removeprefix(NODE_PREFIX))
    if spec.signer_name == APISERVER_CLIENT:
        return bootstrapper
    if spec.signer_name == KUBELET_SERVING:
        return spec.username == cn and NODES in spec.groups
    return False
