"""The federation's PKI: its CA, certificates, and who a certificate names.

A federation CA (ECDSA P-256) issues one certificate per party node, the
coordinator, the operator and each analyst. The certificate carries who the
holder is: the subject's common name is the holder's name (e.g. ``education``)
and its organisational unit is the role (``party``, ``coordinator``,
``operator`` or ``analyst``). Servers require client certificates from the
federation CA, so every channel is mutual TLS (`headcount.tls` builds the gRPC
credentials); authorisation by role happens in ``headcount.rpc`` from the
verified peer certificate. No gRPC here: the ceremony and attestations verify
certificates with it from the kernel floor.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from headcount.errors import ConfigError, InvalidProof, NotAuthorised


class Role(StrEnum):
    PARTY = "party"
    COORDINATOR = "coordinator"
    OPERATOR = "operator"
    ANALYST = "analyst"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified certificate says its holder is."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    cert_path: Path
    key_path: Path


CERT_VALIDITY = dt.timedelta(days=365)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    # Private keys are created 0600 from the start, never chmod-ed afterwards,
    # so there is no window in which another local user can read them.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(directory: Path, federation: str) -> IssuedCredential:
    """Create a self-signed federation CA in ``directory`` (ca.pem, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + CERT_VALIDITY * 5)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cred = IssuedCredential(directory / "ca.pem", directory / "ca.key")
    cred.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(cred.key_path, _key_pem(key))
    return cred


def issue(
    ca: IssuedCredential,
    directory: Path,
    name: str,
    role: Role,
    *,
    hostnames: tuple[str, ...] = ("localhost",),
    key_directory: Path | None = None,
) -> IssuedCredential:
    """Issue a certificate for ``name`` in ``role``, usable as client and server.

    The certificate goes to ``directory/name.pem`` and the private key to
    ``key_directory/name.key`` (default: beside the certificate).
    """
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("federation CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(org)),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys((*hostnames, name))]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    keys = key_directory or directory
    keys.mkdir(parents=True, exist_ok=True)
    cred = IssuedCredential(directory / f"{name}.pem", keys / f"{name}.key")
    cred.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(cred.key_path, _key_pem(key))
    return cred


def principal_of(cert: x509.Certificate, organisation: str | None = None) -> Principal:
    """The name and role a certificate states; NotAuthorised if it states none,
    or (given ``organisation``, the federation's name) another federation's."""
    if organisation is not None:
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if [str(o.value) for o in orgs] != [organisation]:
            raise NotAuthorised(
                f"the certificate is not for federation {organisation!r}"
                " (its organisation names another)"
            )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(cns) != 1 or len(ous) != 1:
        raise NotAuthorised("certificate must name exactly one holder and one role")
    try:
        role = Role(str(ous[0].value))
    except ValueError:
        raise NotAuthorised(f"certificate role {ous[0].value!r} is not a Headcount role") from None
    return Principal(str(cns[0].value), role)


def verify_issued_by(cert_pem: bytes, ca_cert_path: Path) -> Principal:
    """Check ``cert_pem`` was issued by the federation CA and is in date.

    Used where a certificate arrives inside a message rather than in the TLS
    handshake (a party identity relayed by the coordinator). Raises
    InvalidProof if the chain or validity period does not hold.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise InvalidProof("certificate is not valid PEM") from exc
    ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise InvalidProof("certificate was not issued by the federation CA") from exc
    now = _now()
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise InvalidProof("certificate is outside its validity period")
    return principal_of(cert)


def private_bytes(path: Path) -> bytes:
    """A private key file's bytes; ConfigError naming it if this machine lacks it.

    Config loading checks every certificate but no private key: each process
    holds only its own key (a department's node never needs another's), so a
    missing key is reported here, by the process that needs it.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"private key not found: {path} (each process needs its own key on its machine)"
        ) from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(private_bytes(path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: expected an EC private key")
    return key
