"""Hostile input on the wire: random and truncated protobufs, chunks out of
order, ciphertexts out of range or under the wrong key. Each gets a clear
status (never INTERNAL) and nothing the node stores changes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing

import grpc
import pytest
from harness import Federation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headcount import tls
from headcount.domain.events import QueryAnnounced
from headcount.wire import party_node_pb2

CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
}
UNARY = [
    "GetIdentity",
    "Contribute",
    "Finish",
    "AddNoise",
    "AbandonQuery",
    "DecryptAggregate",
    "SyncAudit",
]
SERVER_STREAM = ["Encode", "EncryptIndicators"]
CLIENT_STREAM = ["AggregateByGroup"]
BIDI = ["ApplyPredicate"]


@pytest.fixture(scope="module")
def channel(linked_federation: Federation) -> Iterator[grpc.Channel]:
    cfg = linked_federation.config
    ch = grpc.secure_channel(
        cfg.party("health").address,
        tls.channel_credentials(cfg.coordinator.tls.cert, cfg.coordinator.tls.key, cfg.ca_cert),
    )
    yield ch
    ch.close()


def _state(fed: Federation) -> tuple[object, ...]:
    node = fed.nodes["health"].node
    with closing(sqlite3.connect(node.store.path)) as db:
        counts = tuple(
            db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in (
                "ceremonies",
                "epochs",
                "tokens",
                "queries",
                "audit_events",
                "privacy_charges",
                "noise_shares",
            )
        )
    return (*counts, node.audit.head())


def _call(ch: grpc.Channel, method: str, payloads: list[bytes]) -> grpc.StatusCode:
    path = f"/headcount.v1.PartyNode/{method}"
    ident = lambda b: b  # noqa: E731 - raw bytes on the wire
    try:
        if method in UNARY:
            ch.unary_unary(path, request_serializer=ident, response_deserializer=ident)(
                payloads[0], timeout=10
            )
        elif method in SERVER_STREAM:
            list(
                ch.unary_stream(path, request_serializer=ident, response_deserializer=ident)(
                    payloads[0], timeout=10
                )
            )
        elif method in CLIENT_STREAM:
            ch.stream_unary(path, request_serializer=ident, response_deserializer=ident)(
                iter(payloads), timeout=10
            )
        else:
            list(
                ch.stream_stream(path, request_serializer=ident, response_deserializer=ident)(
                    iter(payloads), timeout=10
                )
            )
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(UNARY + SERVER_STREAM + CLIENT_STREAM + BIDI),
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=3),
)
def test_random_bytes_get_a_clean_error_and_change_nothing(
    linked_federation: Federation, channel: grpc.Channel, method: str, payloads: list[bytes]
) -> None:
    before = _state(linked_federation)
    code = _call(channel, method, payloads)
    # Random bytes can parse as a valid (mostly empty) message: then the
    # request is refused for what it says, still never with INTERNAL.
    assert code in CLEAN or (code == grpc.StatusCode.OK and method in ("GetIdentity", "SyncAudit"))
    assert _state(linked_federation) == before


def test_truncated_message_is_invalid_argument(
    linked_federation: Federation, channel: grpc.Channel
) -> None:
    good = party_node_pb2.FinishRequest(ceremony_id="x" * 40).SerializeToString()
    assert _call(channel, "Finish", [good[:-5]]) == grpc.StatusCode.INVALID_ARGUMENT


def test_ciphertexts_under_a_wrong_key_or_out_of_range(
    linked_federation: Federation, channel: grpc.Channel
) -> None:
    """An announced hop whose ciphertexts are out of range is refused, not summed."""
    fed = linked_federation
    coordinator = fed.coordinator.coordinator
    epoch = coordinator.store.latest_epoch()
    purpose = "Hostile input: ciphertexts out of range."
    coordinator.log(
        QueryAnnounced(
            query_id="hostile-ct",
            epoch_id=epoch,
            purpose=purpose,
            parties=("education", "health"),
            epsilon=0.1,
        )
    )
    n_bytes = fed.nodes["education"].node.identity().paillier_n
    tokens, _ = fed.nodes["health"].node.store.token_rows(epoch)
    width = 2 * len(n_bytes)
    header = party_node_pb2.HopInput(
        header=party_node_pb2.HopHeader(
            query_id="hostile-ct",
            epoch_id=epoch,
            paillier_n=n_bytes,
            epsilon=0.1,
            purpose=purpose,
            expected_records=len(tokens),
        )
    )
    bad = party_node_pb2.HopInput(
        chunk=party_node_pb2.CiphertextChunk(
            seq=0, tokens=tokens[:2], ciphertexts=[b"\xff" * width, b"\x00" * width], last=True
        )
    )
    before = _state(fed)
    code = _call(channel, "AggregateByGroup", [header.SerializeToString(), bad.SerializeToString()])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert _state(fed) == before
