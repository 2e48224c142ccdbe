"""The wire format: generated protobuf code and conversions to dataclasses."""

from headcount.wire._gen.headcount.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    party_node_pb2,
    party_node_pb2_grpc,
)

__all__ = [
    "common_pb2",
    "coordinator_pb2",
    "coordinator_pb2_grpc",
    "party_node_pb2",
    "party_node_pb2_grpc",
]
