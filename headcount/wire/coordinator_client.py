"""A typed client for the coordinator: one method per Coordinator RPC, taking and
returning frozen dataclasses (`headcount.domain`); protobuf stays in this module
and `convert`.

Every failed call is raised as the `HeadcountError` its status stands for
(`headcount.rpc.raise_from_rpc`); a coordinator that is down or too slow is
named with its address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from headcount import rpc
from headcount.domain.audit import AuditTrail
from headcount.domain.projects import ProjectDecision, ProjectProposal
from headcount.domain.query import QuerySpec
from headcount.domain.release import QueryOutcome
from headcount.domain.status import CeremonySummary, FederationStatus, LinkageSummary, ProjectView
from headcount.wire import convert as cv
from headcount.wire import coordinator_pb2 as co
from headcount.wire import coordinator_pb2_grpc

__all__ = ["SHORT_TIMEOUT_S", "CoordinatorClient"]

T = TypeVar("T")

# Deadline of the calls that only read or record (status, projects, audit log).
SHORT_TIMEOUT_S = 30.0


class CoordinatorClient:
    """The operator's, an analyst's or a steward's side of the coordinator's channel."""

    def __init__(self, address: str, channel: grpc.Channel, timeout_s: float) -> None:
        """``timeout_s`` is the deadline of the long calls (ceremony, linkage, query)."""
        self.address, self.timeout_s = address, timeout_s
        self._channel = channel
        self._stub = coordinator_pb2_grpc.CoordinatorStub(channel)

    def _call(self, fn: Callable[[coordinator_pb2_grpc.CoordinatorStub], T]) -> T:
        try:
            return fn(self._stub)
        except grpc.RpcError as exc:
            # Unreachable: say which server and where, not only gRPC's own text.
            code = exc.code() if isinstance(exc, grpc.Call) else None
            unreachable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            rpc.raise_from_rpc(exc, f"coordinator at {self.address}" if unreachable else None)

    def wait_ready(self, timeout_s: float) -> None:
        rpc.wait_healthy(self._channel, "coordinator", timeout_s=timeout_s)

    # -- operator ------------------------------------------------------------------------
    def run_ceremony(self) -> CeremonySummary:
        reply = self._call(lambda s: s.RunCeremony(co.RunCeremonyRequest(), timeout=self.timeout_s))
        return cv.ceremony_from_pb(reply)

    def run_linkage(self, threshold: float = 0.0) -> LinkageSummary:
        """A linkage epoch's exact statistics; ``threshold`` 0 is the federation default."""
        request = cv.linkage_request_to_pb(threshold)
        reply = self._call(lambda s: s.RunLinkage(request, timeout=self.timeout_s))
        return cv.linkage_from_pb(reply)

    # -- analyst -------------------------------------------------------------------------
    def submit_query(self, spec: QuerySpec) -> QueryOutcome:
        request = cv.query_to_pb(spec)
        reply = self._call(lambda s: s.SubmitQuery(request, timeout=self.timeout_s))
        return cv.query_result_from_pb(reply)

    # -- projects (Five Safes) -------------------------------------------------------------
    def propose_project(self, proposal: ProjectProposal) -> ProjectView:
        request = cv.proposal_to_pb(proposal)
        reply = self._call(lambda s: s.ProposeProject(request, timeout=SHORT_TIMEOUT_S))
        return cv.project_from_pb(reply)

    def approve_project(self, decision: ProjectDecision) -> ProjectView:
        request = cv.decision_to_pb(decision)
        reply = self._call(lambda s: s.ApproveProject(request, timeout=SHORT_TIMEOUT_S))
        return cv.project_from_pb(reply)

    def revoke_project(self, decision: ProjectDecision) -> ProjectView:
        request = cv.decision_to_pb(decision)
        reply = self._call(lambda s: s.RevokeProject(request, timeout=SHORT_TIMEOUT_S))
        return cv.project_from_pb(reply)

    def list_projects(self) -> list[ProjectView]:
        reply = self._call(
            lambda s: s.ListProjects(co.ListProjectsRequest(), timeout=SHORT_TIMEOUT_S)
        )
        return cv.project_list_from_pb(reply)

    # -- everyone ------------------------------------------------------------------------
    def status(self) -> FederationStatus:
        reply = self._call(lambda s: s.GetStatus(co.StatusRequest(), timeout=SHORT_TIMEOUT_S))
        return cv.status_from_pb(reply)

    def audit_log(self) -> AuditTrail:
        """The audit log as the coordinator serves it, parsed but not verified."""
        reply = self._call(lambda s: s.GetAuditLog(co.AuditLogRequest(), timeout=SHORT_TIMEOUT_S))
        return cv.audit_trail_from_pb(reply)

    def close(self) -> None:
        self._channel.close()
