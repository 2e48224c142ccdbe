"""The typed node client: errors named by the node, hop inputs cut into messages."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import pytest

from headcount.crypto import paillier
from headcount.errors import PeerUnavailable
from headcount.wire import node_convert
from headcount.wire.node_client import NodeClient
from headcount.wire.node_values import ChunkIn, HopHeader, HopInput, LeftoversIn, SetHashesIn


@pytest.fixture
def down() -> Iterator[NodeClient]:
    """A client of a node nobody listens for (a port bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = NodeClient("health", grpc.insecure_channel(f"127.0.0.1:{port}"), 2.0)
    try:
        yield client
    finally:
        client.close()


def test_a_node_that_is_down_is_named(down: NodeClient) -> None:
    with pytest.raises(PeerUnavailable, match=r"^health: "):
        down.get_identity()
    with pytest.raises(PeerUnavailable, match=r"^health: "):
        list(down.encode("e" * 32, "c" * 32))
    assert not down.healthy()


def test_hop_inputs_stream_in_bounded_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_convert, "CHUNK_RECORDS", 2)
    monkeypatch.setattr(node_convert, "HASHES_PER_MESSAGE", 3)
    key = paillier.PublicKey(2**521 - 1)  # a Mersenne prime: odd and large enough
    header = HopHeader("q", "e", key, "", (), 0.5, 5, "purpose")
    tokens = [bytes([i]) * 16 for i in range(5)]
    hop = HopInput(header, [b"h"] * 7, tokens, [b"c"] * 5, leftovers=[b"l"] * 3)
    kinds = [m.WhichOneof("item") for m in node_convert.hop_to_pb(hop)]
    assert kinds == ["header"] + ["set_hashes"] * 3 + ["chunk"] * 3 + ["leftovers"] * 2
    chunks = [m.chunk for m in node_convert.hop_to_pb(hop) if m.HasField("chunk")]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert [c.last for c in chunks] == [False, False, True]
    assert [t for c in chunks for t in c.tokens] == tokens
    empty = HopInput(header, [], [], [])
    (_, only) = list(node_convert.hop_to_pb(empty))
    assert only.chunk.last and only.chunk.seq == 0


def test_a_hop_stream_reads_back_as_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's side (`hop_from_pb`) reads what the client's side writes."""
    monkeypatch.setattr(node_convert, "CHUNK_RECORDS", 2)
    key = paillier.PublicKey(2**521 - 1)
    header = HopHeader("q", "e", key, "g", (), 0.5, 3, "purpose", fill_count=4)
    tokens = [bytes([i]) * 16 for i in range(3)]
    hop = HopInput(header, [b"h"], tokens, [b"c"] * 3, leftovers=[b"l"])
    got, items = node_convert.hop_from_pb(node_convert.hop_to_pb(hop))
    assert got == header
    assert list(items) == [
        SetHashesIn([b"h"]),
        ChunkIn(0, tokens[:2], [b"c"] * 2, False),
        ChunkIn(1, tokens[2:], [b"c"], True),
        LeftoversIn([b"l"]),
    ]
