"""Every channel is mutual TLS, and each server answers only the roles it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import Federation

from headcount import rpc, tls
from headcount.config import Credential
from headcount.tls import Role
from headcount.wire import (
    coordinator_pb2,
    coordinator_pb2_grpc,
    party_node_pb2,
    party_node_pb2_grpc,
)

TIMEOUT_S = 10


def _node_stub(fed: Federation, party: str, cred: Credential, ca: Path | None = None) -> Any:
    channel = grpc.secure_channel(
        fed.config.party(party).address,
        tls.channel_credentials(cred.cert, cred.key, ca or fed.config.ca_cert),
    )
    return party_node_pb2_grpc.PartyNodeStub(channel)


def _coordinator_stub(fed: Federation, cred: Credential) -> Any:
    channel = grpc.secure_channel(
        fed.config.coordinator.address,
        tls.channel_credentials(cred.cert, cred.key, fed.config.ca_cert),
    )
    return coordinator_pb2_grpc.CoordinatorStub(channel)


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[no-any-return]


def test_node_answers_the_coordinator(linked_federation: Federation) -> None:
    stub = _node_stub(linked_federation, "health", linked_federation.config.coordinator.tls)
    reply = stub.GetIdentity(party_node_pb2.IdentityRequest(), timeout=TIMEOUT_S)
    assert reply.party == "health"


@pytest.mark.parametrize("who", ["analyst", "operator", "party"])
def test_node_refuses_every_other_role(linked_federation: Federation, who: str) -> None:
    cfg = linked_federation.config
    cred = {
        "analyst": cfg.analysts[0].tls,
        "operator": cfg.operator,
        "party": cfg.party("education").tls,
    }[who]
    stub = _node_stub(linked_federation, "health", cred)
    code = _code(lambda: stub.GetIdentity(party_node_pb2.IdentityRequest(), timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code = _code(
        lambda: list(stub.Encode(party_node_pb2.EncodeRequest(epoch_id="x"), timeout=TIMEOUT_S))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_node_refuses_a_certificate_from_another_ca(
    linked_federation: Federation, tmp_path: Path
) -> None:
    # An attacker's own CA issues a certificate that claims the coordinator role.
    rogue_ca = tls.create_ca(tmp_path / "rogue", "demo")
    forged = tls.issue(rogue_ca, tmp_path / "rogue", "coordinator", Role.COORDINATOR)
    stub = _node_stub(
        linked_federation,
        "health",
        Credential(cert=forged.cert_path, key=forged.key_path),
        ca=linked_federation.config.ca_cert,
    )
    code = _code(lambda: stub.GetIdentity(party_node_pb2.IdentityRequest(), timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


def test_node_refuses_a_plaintext_connection(linked_federation: Federation) -> None:
    channel = grpc.insecure_channel(linked_federation.config.party("health").address)
    stub = party_node_pb2_grpc.PartyNodeStub(channel)
    code = _code(lambda: stub.GetIdentity(party_node_pb2.IdentityRequest(), timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_a_server_from_another_ca(
    linked_federation: Federation, tmp_path: Path
) -> None:
    """A client trusting only the federation CA will not talk to an impostor."""
    rogue_ca = tls.create_ca(tmp_path / "rogue", "demo")
    cfg = linked_federation.config
    channel = grpc.secure_channel(
        cfg.party("health").address,
        tls.channel_credentials(
            cfg.coordinator.tls.cert, cfg.coordinator.tls.key, rogue_ca.cert_path
        ),
    )
    stub = party_node_pb2_grpc.PartyNodeStub(channel)
    code = _code(lambda: stub.GetIdentity(party_node_pb2.IdentityRequest(), timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_coordinator_authorises_by_role(linked_federation: Federation) -> None:
    cfg = linked_federation.config
    analyst = _coordinator_stub(linked_federation, cfg.analysts[0].tls)
    operator = _coordinator_stub(linked_federation, cfg.operator)
    party = _coordinator_stub(linked_federation, cfg.party("education").tls)
    assert (
        _code(lambda: analyst.RunLinkage(coordinator_pb2.RunLinkageRequest(), timeout=TIMEOUT_S))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        _code(lambda: operator.SubmitQuery(coordinator_pb2.QueryRequest(), timeout=TIMEOUT_S))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        _code(lambda: party.GetStatus(coordinator_pb2.StatusRequest(), timeout=TIMEOUT_S))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    status = analyst.GetStatus(coordinator_pb2.StatusRequest(), timeout=TIMEOUT_S)
    assert status.federation == cfg.name


def test_health_service_is_served_over_mtls(linked_federation: Federation) -> None:
    cfg = linked_federation.config
    channel = rpc.secure_channel(
        cfg.party("justice").address,
        tls.channel_credentials(cfg.coordinator.tls.cert, cfg.coordinator.tls.key, cfg.ca_cert),
        max_message_bytes=cfg.max_message_bytes,
    )
    rpc.wait_healthy(channel, "justice", timeout_s=TIMEOUT_S)


def test_a_certificate_for_another_federation_is_refused(
    linked_federation: Federation, tmp_path: Path
) -> None:
    """The federation's own CA, reused for a second federation, issues a
    coordinator certificate there: its organisation names that federation, and
    both servers refuse it although the TLS chain verifies."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cfg = linked_federation.config
    ca_cert = x509.load_pem_x509_certificate(cfg.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(
        (cfg.ca_cert.parent / "ca.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "another-federation"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "coordinator"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "coordinator"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "other.pem", tmp_path / "other.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other = Credential(cert=cert_path, key=key_path)
    node = _node_stub(linked_federation, "health", other)
    code = _code(lambda: node.GetIdentity(party_node_pb2.IdentityRequest(), timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    coordinator = _coordinator_stub(linked_federation, other)
    code = _code(lambda: coordinator.GetStatus(coordinator_pb2.StatusRequest(), timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.PERMISSION_DENIED
