"""The cluster's public-key infrastructure: one CA and the certificates it signs.

Owns making, checking and writing keys and certificates (PEM files under a directory, the
state directory's `pki/` for `k8semu up`); it knows nothing about sockets (TLS contexts are
made in `k8semu.transport`) nor about which component needs which certificate (the cluster
launcher says so through `CertSpec`).

Keys are ECDSA P-256: a key costs well under a millisecond (RSA 2048 costs ~100 ms) and every
TLS stack in use here (gRPC's BoringSSL, OpenSSL through `ssl`, Go's crypto/tls for etcdctl
and kubectl) accepts it. The CA is valid 10 years, leaf certificates 1 year (kubeadm's
choices). A certificate is reused by later runs and made again only when it is missing,
unreadable, not signed by the CA, expires within `RENEW_BEFORE`, or no longer has the subject,
names or usages asked for. Keys are written 0600, atomically (temporary file then rename), so
a run interrupted half-way leaves no half-written file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
CERT_VALIDITY = datetime.timedelta(days=365)
#: A certificate this close to its end is made again (kubeadm renews in the last month too).
RENEW_BEFORE = datetime.timedelta(days=30)
CA_NAME = "ca"
CA_COMMON_NAME = "k8semu-ca"
_BACKDATE = datetime.timedelta(minutes=5)  # clocks of several hosts are never exactly equal


class PKIError(ValueError):
    """A key or certificate that cannot be read, made or used; the message names the file."""


@dataclass(frozen=True, slots=True)
class CertSpec:
    """What one certificate must say: its file stem `name`, subject CN (the user, for a client
    certificate) and O (groups), the DNS names and IP addresses it is valid for, and whether
    it may serve (serverAuth) and/or authenticate a client (clientAuth)."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    server: bool = True
    client: bool = True

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name == CA_NAME:
            raise PKIError(f"certificate name {self.name!r}: must be a plain file name, not 'ca'")
        if not (self.server or self.client):
            raise PKIError(f"certificate {self.name}: must be a server or a client certificate")


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The PEM files of one certificate: its key, itself, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate on disk, as `k8semu certs` lists it."""

    name: str
    subject: str
    not_after: datetime.datetime
    hosts: tuple[str, ...]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically with `mode` from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _host_texts(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return (*ext.get_values_for_type(x509.DNSName), *ips)


class CertificateAuthority:
    """The cluster CA: `ca.crt` and `ca.key` in `directory`, made on first use."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.directory = directory
        self.key = key
        self.cert = cert

    @property
    def cert_path(self) -> Path:
        return self.directory / f"{CA_NAME}.crt"

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA in `directory`; a new one when there is none or it expires soon. A new CA
        invalidates every certificate signed by the old one (they are made again on use)."""
        cert_path, key_path = directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key"
        if cert_path.exists() and key_path.exists():
            cert, key = _load_pair(cert_path, key_path)
            if cert.not_valid_after_utc - _now() > RENEW_BEFORE:
                return cls(directory, key, cert)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_file(key_path, key_pem(key), 0o600)
        write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(directory, key, cert)

    def signed(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed `cert`."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def issue(self, spec: CertSpec) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new key and a certificate for it, as `spec` says."""
        key = ec.generate_private_key(ec.SECP256R1())
        return self.sign(spec, key.public_key()), key

    def sign(self, spec: CertSpec, public_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
        """A certificate for `public_key` (e.g. from a CSR), as `spec` says."""
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if spec.server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if spec.client else []
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + CERT_VALIDITY, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        sans = subject_alt_names(spec.hosts)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def ensure(self, spec: CertSpec) -> CertFiles:
        """`spec`'s certificate in the CA's directory: the one there when it still fits,
        else a new one."""
        files = CertFiles(
            self.directory / f"{spec.name}.crt", self.directory / f"{spec.name}.key", self.cert_path
        )
        if files.cert.exists() and files.key.exists():
            try:
                cert, _ = _load_pair(files.cert, files.key)
            except PKIError:
                pass
            else:
                if self._fits(cert, spec):
                    return files
        cert, key = self.issue(spec)
        write_file(files.key, key_pem(key), 0o600)
        write_file(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return files

    def _fits(self, cert: x509.Certificate, spec: CertSpec) -> bool:
        if not self.signed(cert) or cert.not_valid_after_utc - _now() <= RENEW_BEFORE:
            return False
        wanted = {repr(n) for n in subject_alt_names(spec.hosts)}
        try:
            have_sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            have = {repr(n) for n in have_sans.value}
        except x509.ExtensionNotFound:
            have = set()
        return have == wanted and subject_of(cert) == (
            spec.common_name,
            tuple(spec.organizations),
        )


def subject_of(cert: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    """(CN, O...) of `cert`: the user and groups Kubernetes reads from a client certificate."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cns[0].value) if cns else "", tuple(str(o.value) for o in orgs))


def _load_pair(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PKIError(f"{cert_path} / {key_path}: cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{key_path}: not an ECDSA key")
    return cert, key


def list_certs(directory: Path) -> list[CertInfo]:
    """Every certificate in `directory` (the CA first), for `k8semu certs`."""
    infos = []
    paths = sorted(directory.glob("*.crt"), key=lambda p: (p.stem != CA_NAME, p.stem))
    for path in paths:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PKIError(f"{path}: cannot be read: {exc}") from exc
        cn, orgs = subject_of(cert)
        subject = f"CN={cn}" + "".join(f",O={o}" for o in orgs)
        infos.append(CertInfo(path.stem, subject, cert.not_valid_after_utc, _host_texts(cert)))
    return infos


def spec_of(name: str, cert: x509.Certificate) -> CertSpec:
    """What `cert` says (subject, names, usages), as a spec to issue it again."""
    cn, orgs = subject_of(cert)
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    return CertSpec(
        name,
        cn,
        orgs,
        hosts=_host_texts(cert),
        server=ExtendedKeyUsageOID.SERVER_AUTH in usages,
        client=ExtendedKeyUsageOID.CLIENT_AUTH in usages or not usages,
    )


def renew(directory: Path) -> list[str]:
    """Issue every certificate in `directory` (not the CA) again with a new key and a new
    year, the same subject, names and usages; the names renewed. Processes that loaded the
    old ones keep them until they restart."""
    ca = CertificateAuthority.load_or_create(directory)
    renewed = []
    for path in sorted(directory.glob("*.crt")):
        if path.stem == CA_NAME:
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PKIError(f"{path}: cannot be read: {exc}") from exc
        new, key = ca.issue(spec_of(path.stem, cert))
        write_file(path.with_suffix(".key"), key_pem(key), 0o600)
        write_file(path, new.public_bytes(serialization.Encoding.PEM), 0o644)
        renewed.append(path.stem)
    return renewed


def ensure_all(directory: Path, specs: Sequence[CertSpec]) -> dict[str, CertFiles]:
    """The CA and every certificate of `specs` in `directory`, reusing what still fits."""
    ca = CertificateAuthority.load_or_create(directory)
    return {spec.name: ca.ensure(spec) for spec in specs}


def pem_bytes(path: Path) -> bytes:
    """A PEM file's bytes; the error names the file (a flag's value, usually)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PKIError(f"{path}: {exc.strerror}") from exc


def ensure_signing_key(key_path: Path, public_path: Path) -> None:
    """A key pair that signs tokens (kubeadm's ``sa.key``/``sa.pub``, the ServiceAccount
    key): kept while `key_path` holds a private key (a new key would revoke every token
    signed so far; an RSA key put there by hand is kept too), made (EC P-256) otherwise;
    `public_path` rewritten when it does not match."""
    if key_path.exists():
        try:
            key = serialization.load_pem_private_key(pem_bytes(key_path), password=None)
        except (ValueError, TypeError) as exc:
            raise PKIError(f"{key_path}: not a PEM private key: {exc}") from exc
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_file(key_path, key_pem(key), 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not public_path.exists() or public_path.read_bytes() != public:
        write_file(public_path, public, 0o644)
