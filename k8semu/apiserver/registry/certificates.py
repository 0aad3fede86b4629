"""The CertificateSigningRequest row (certificates.k8s.io/v1): checks as kube-apiserver's
(k8s.io/kubernetes pkg/apis/certificates/validation), with its field paths and messages.

spec.request a PEM "CERTIFICATE REQUEST" (its signature checked), spec.signerName a domain
and path (`example.com/signer`), spec.usages given, known and not repeated,
spec.expirationSeconds at least 600. spec.username/uid/groups are the requester's, set on
create from the authenticated user (`auth.user.REQUESTER`), whatever the request said; the
spec never changes after. status.conditions: Approved and Denied exclusive, each type once,
Approved/Denied True and never removed; status.certificate PEM certificates, not on a Denied
or Failed request, and never changed once set. The `approval` subresource (REST) writes the
status as `status` does; RBAC tells them apart. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cryptography import x509

from k8semu.api.csr import APPROVED, CSR, DENIED, FAILED, USAGES, condition, parse_request
from k8semu.apiserver.auth.user import REQUESTER
from k8semu.apiserver.validation import FieldError

MIN_EXPIRATION_SECONDS = 600
_SIGNER = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[^/]+")


async def admit(objects: object, csr: CSR) -> None:
    """The requester's name, uid and groups into the spec (Kubernetes' strategy does this
    on create; a client cannot claim another's)."""
    user = REQUESTER.get()
    del csr.spec.groups[:]
    csr.spec.username, csr.spec.uid = (user.name, user.uid) if user else ("", "")
    if user is not None:
        csr.spec.groups.extend(user.groups)


def _quoted(value: str) -> str:
    return f'"{value}"'


def validate(csr: CSR) -> Iterator[FieldError]:
    spec = csr.spec
    try:
        parse_request(spec.request)
    except ValueError as exc:
        yield FieldError("spec.request", f"Invalid value: <{len(spec.request)} bytes>: {exc}")
    if not spec.signer_name:
        yield FieldError("spec.signerName", "Required value")
    elif not _SIGNER.fullmatch(spec.signer_name):
        yield FieldError(
            "spec.signerName",
            f"Invalid value: {_quoted(spec.signer_name)}: must be a fully qualified domain and"
            " path of the form 'example.com/signer-name'",
        )
    if not spec.usages:
        yield FieldError("spec.usages", "Required value: usages must be provided")
    for i, usage in enumerate(spec.usages):
        if usage not in USAGES:
            supported = ", ".join(_quoted(u) for u in USAGES)
            yield FieldError(
                f"spec.usages[{i}]",
                f"Unsupported value: {_quoted(usage)}: supported values: {supported}",
            )
        elif usage in spec.usages[:i]:
            yield FieldError(f"spec.usages[{i}]", f"Duplicate value: {_quoted(usage)}")
    if spec.HasField("expiration_seconds") and spec.expiration_seconds < MIN_EXPIRATION_SECONDS:
        yield FieldError(
            "spec.expirationSeconds",
            f"Invalid value: {spec.expiration_seconds}: may not specify a duration less than"
            " 600 seconds (10 minutes)",
        )
    yield from _status(csr)


def _status(csr: CSR) -> Iterator[FieldError]:
    seen: set[str] = set()
    for i, c in enumerate(csr.status.conditions):
        path = f"status.conditions[{i}]"
        if not c.type:
            yield FieldError(f"{path}.type", "Required value")
        elif c.type in seen:
            yield FieldError(f"{path}.type", f"Duplicate value: {_quoted(c.type)}")
        seen.add(c.type)
        if c.type in (APPROVED, DENIED) and c.status != "True":
            yield FieldError(
                f"{path}.status",
                f'Unsupported value: {_quoted(c.status)}: supported values: "True"',
            )
    if condition(csr, APPROVED) and condition(csr, DENIED):
        yield FieldError(
            "status.conditions",
            "Invalid value: Approved and Denied conditions are mutually exclusive",
        )
    cert = csr.status.certificate
    if not cert:
        return
    if condition(csr, DENIED) or condition(csr, FAILED):
        yield FieldError(
            "status.certificate",
            "Forbidden: certificate cannot be set on a Denied or Failed certificate signing"
            " request",
        )
    try:
        x509.load_pem_x509_certificates(cert)
    except ValueError:
        yield FieldError(
            "status.certificate",
            "Invalid value: <certificate data>: must contain at least one CERTIFICATE PEM block",
        )


def prepare_update(new: CSR, old: CSR) -> None:
    """The spec (request and requester) never changes once created."""
    new.spec.CopyFrom(old.spec)


def validate_update(new: CSR, old: CSR) -> Iterator[FieldError]:
    for kind in (APPROVED, DENIED):
        if condition(old, kind) and not condition(new, kind):
            yield FieldError(
                "status.conditions",
                f'Forbidden: updates may not remove a condition of type "{kind}"',
            )
    if old.status.certificate and new.status.certificate != old.status.certificate:
        yield FieldError(
            "status.certificate", "Forbidden: updates may not modify existing certificate content"
        )
