"""Every gRPC credential Headcount builds: mutual TLS from the federation PKI
(`headcount.crypto.pki`), whose names this module also offers to the wire
and role floors."""

from __future__ import annotations

from pathlib import Path

import grpc

from headcount.crypto.pki import (
    CERT_VALIDITY,
    IssuedCredential,
    Principal,
    Role,
    create_ca,
    issue,
    load_private_key,
    principal_of,
    private_bytes,
    verify_issued_by,
    write_private,
)

__all__ = [
    "CERT_VALIDITY",
    "IssuedCredential",
    "Principal",
    "Role",
    "channel_credentials",
    "create_ca",
    "issue",
    "load_private_key",
    "principal_of",
    "server_credentials",
    "verify_issued_by",
    "write_private",
]


def server_credentials(cert_path: Path, key_path: Path, ca_path: Path) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from the CA."""
    return grpc.ssl_server_credentials(
        [(private_bytes(key_path), cert_path.read_bytes())],
        root_certificates=ca_path.read_bytes(),
        require_client_auth=True,
    )


def channel_credentials(cert_path: Path, key_path: Path, ca_path: Path) -> grpc.ChannelCredentials:
    """Client credentials presenting our certificate and trusting only the CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_path.read_bytes(),
        private_key=private_bytes(key_path),
        certificate_chain=cert_path.read_bytes(),
    )
