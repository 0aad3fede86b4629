"""CertificateSigningRequest as an object: kube-apiserver's checks and messages (the registry
row's pure functions), what each signer signs and what the approver approves (api/csr.py),
kubectl's columns."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k8semu.api import csr, kinds, manifest
from k8semu.api.columns import COLUMNS
from k8semu.apiserver.registry import certificates
from k8semu.pb.api.v1 import certificates_pb2

NODE_USAGES = ["digital signature", "client auth"]


def _pem(cn: str, orgs: tuple[str, ...] = (), hosts: tuple[str, ...] = ()) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _csr(spec: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
    doc = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": "c"}, "spec": spec, "status": status or {}}  # fmt: skip
    obj = manifest.from_dict(doc)
    assert isinstance(obj, certificates_pb2.CertificateSigningRequest)
    return obj


def _node(cn: str = "system:node:n1", signer: str = csr.KUBELET_CLIENT, **more: Any) -> Any:
    spec = {"request": base64.b64encode(_pem(cn, ("system:nodes",))).decode(),
            "signerName": signer, "usages": NODE_USAGES, **more}  # fmt: skip
    return _csr(spec)


def test_registry() -> None:
    k = kinds.for_resource("csr")
    assert (k.kind, k.api_version, k.namespaced) == (
        "CertificateSigningRequest", "certificates.k8s.io/v1", False
    )  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"request": base64.b64encode(b"junk").decode()},
         "spec.request: Invalid value: <4 bytes>: PEM block type must be CERTIFICATE REQUEST"),
        ({"signerName": ""}, "spec.signerName: Required value"),
        ({"signerName": "nodomain"}, 'spec.signerName: Invalid value: "nodomain": must be a'
         " fully qualified domain and path of the form 'example.com/signer-name'"),
        ({"usages": []}, "spec.usages: Required value: usages must be provided"),
        ({"usages": ["client auth", "client auth"]},
         'spec.usages[1]: Duplicate value: "client auth"'),
        ({"usages": ["flying"]}, 'spec.usages[0]: Unsupported value: "flying": supported'),
        ({"expirationSeconds": 60}, "spec.expirationSeconds: Invalid value: 60: may not specify"
         " a duration less than 600 seconds (10 minutes)"),
    ],
)  # fmt: skip
def test_spec_checks(spec: dict[str, Any], expected: str) -> None:
    good = _node()
    doc = {"request": base64.b64encode(good.spec.request).decode(),
           "signerName": good.spec.signer_name, "usages": NODE_USAGES, **spec}  # fmt: skip
    errors = [str(e) for e in certificates.validate(_csr(doc))]
    assert any(e.startswith(expected) for e in errors), errors
    assert not list(certificates.validate(good))


def test_status_checks_and_updates() -> None:
    both = _node()
    for kind in (csr.APPROVED, csr.DENIED):
        both.status.conditions.add(type=kind, status="True")
    assert "mutually exclusive" in str(list(certificates.validate(both)))
    old = _node()
    old.status.conditions.add(type=csr.APPROVED, status="True")
    old.status.certificate = b"x"
    new = _node()
    assert [str(e) for e in certificates.validate_update(new, old)] == [
        'status.conditions: Forbidden: updates may not remove a condition of type "Approved"',
        "status.certificate: Forbidden: updates may not modify existing certificate content",
    ]
    certificates.prepare_update(new, old)
    assert new.spec == old.spec  # the spec (and requester) never changes


def test_what_is_signed_and_approved() -> None:
    def never(name: str) -> bool:
        return False

    def registered(name: str) -> bool:
        return name == "n1"

    bootstrap = {"username": "system:bootstrap:abcdef", "groups": [csr.BOOTSTRAPPERS]}
    assert csr.auto_approvable(_node(**bootstrap), never)
    assert not csr.auto_approvable(_node(**bootstrap), registered)  # a running node's name
    own = {"username": "system:node:n1", "groups": [csr.NODES]}
    assert csr.auto_approvable(_node(**own), registered)  # renewal
    assert not csr.auto_approvable(_node("system:node:n2", **own), never)  # another node's
    admin_pem = base64.b64encode(_pem("admin", ("system:masters",))).decode()
    admin = _csr(
        {"request": admin_pem, "signerName": csr.APISERVER_CLIENT, "usages": NODE_USAGES,
         **bootstrap}
    )  # fmt: skip
    assert csr.problem(admin) and not csr.auto_approvable(admin, never)
    serving = _csr({"request": base64.b64encode(_pem("system:node:n1", ("system:nodes",),
                    ("n1",))).decode(), "signerName": csr.KUBELET_SERVING,
                    "usages": ["server auth"], **own})  # fmt: skip
    assert csr.auto_approvable(serving, registered)
    serving.spec.username = "system:bootstrap:abcdef"
    assert not csr.auto_approvable(serving, never)  # only the node itself
    server_usage = _node(**bootstrap)
    server_usage.spec.usages[:] = ["server auth"]
    assert csr.problem(server_usage) and not csr.auto_approvable(server_usage, never)


def test_columns() -> None:
    c = _node(username="system:bootstrap:abcdef")
    row = COLUMNS["CertificateSigningRequest"].row(c, 0.0)
    assert row[2:] == [csr.KUBELET_CLIENT, "system:bootstrap:abcdef", "<none>", "Pending"]
    c.status.conditions.add(type=csr.APPROVED, status="True")
    c.status.certificate = b"x"
    assert COLUMNS["CertificateSigningRequest"].row(c, 0.0)[-1] == "Approved,Issued"
