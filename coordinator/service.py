"""gRPC servicer for the Coordinator service: unpack, call ``Coordinator``, pack."""

from __future__ import annotations

from typing import Any

import grpc

from coordinator.coordinator import Coordinator
from coordinator.epoch import linkage_summary
from headcount.domain.audit import AuditTrail
from headcount.domain.status import ProjectView
from headcount.errors import InvalidRequest
from headcount.rpc import peer_certificate, peer_principal
from headcount.tls import Role
from headcount.wire import convert as cv
from headcount.wire import coordinator_pb2, coordinator_pb2_grpc

OPERATOR = frozenset({Role.OPERATOR})
ANALYST = frozenset({Role.ANALYST})
READERS = frozenset({Role.OPERATOR, Role.ANALYST})
STEWARDS = frozenset({Role.PARTY})


def allowed_roles() -> dict[str, frozenset[Role]]:
    service = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name
    return {
        f"/{service}/RunCeremony": OPERATOR,
        f"/{service}/RunLinkage": OPERATOR,
        f"/{service}/SubmitQuery": ANALYST,
        f"/{service}/GetStatus": READERS,
        f"/{service}/GetAuditLog": READERS,
        f"/{service}/ProposeProject": ANALYST,
        f"/{service}/ApproveProject": STEWARDS,
        f"/{service}/RevokeProject": frozenset({Role.PARTY, Role.OPERATOR}),
        f"/{service}/ListProjects": frozenset({Role.OPERATOR, Role.ANALYST, Role.PARTY}),
    }


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    def RunCeremony(
        self, request: coordinator_pb2.RunCeremonyRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.CeremonySummary:
        return cv.ceremony_to_pb(self.c.run_ceremony())

    def RunLinkage(
        self, request: coordinator_pb2.RunLinkageRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.LinkageSummary:
        threshold = cv.linkage_request_from_pb(request)
        return cv.linkage_to_pb(linkage_summary(self.c.run_linkage(threshold)))

    def SubmitQuery(
        self, request: coordinator_pb2.QueryRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.QueryResult:
        analyst = peer_principal(context).name
        try:
            spec = cv.query_from_pb(request)
        except InvalidRequest:
            # Refused before it is a query: recorded like every refusal.
            self.c.queries.refuse_invalid(analyst, cv.stated_purpose(request))
            raise
        return cv.query_result_to_pb(self.c.run_query(spec, analyst))

    def GetStatus(
        self, request: coordinator_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.FederationStatus:
        return cv.status_to_pb(self.c.status())

    def ProposeProject(
        self, request: coordinator_pb2.ProjectProposal, context: grpc.ServicerContext
    ) -> coordinator_pb2.Project:
        proposal = cv.proposal_from_pb(request)
        doc = proposal.doc(peer_principal(context).name)
        return cv.project_to_pb(self.c.propose_project(doc))

    def ApproveProject(
        self, request: coordinator_pb2.ProjectDecision, context: grpc.ServicerContext
    ) -> coordinator_pb2.Project:
        return cv.project_to_pb(self._decide(request, "approve", context))

    def RevokeProject(
        self, request: coordinator_pb2.ProjectDecision, context: grpc.ServicerContext
    ) -> coordinator_pb2.Project:
        return cv.project_to_pb(self._decide(request, "revoke", context))

    def _decide(
        self, request: coordinator_pb2.ProjectDecision, decision: str, context: grpc.ServicerContext
    ) -> ProjectView:
        d = cv.decision_from_pb(request)
        return self.c.decide_project(
            d.project_id, decision, peer_principal(context), d.signature, peer_certificate(context)
        )

    def ListProjects(
        self, request: coordinator_pb2.ListProjectsRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.ProjectList:
        return cv.project_list_to_pb(self.c.project_view(p) for p in self.c.store.project_ids())

    def GetAuditLog(
        self, request: coordinator_pb2.AuditLogRequest, context: grpc.ServicerContext
    ) -> coordinator_pb2.AuditLog:
        events = self.c.audit.events()
        head = self.c.audit.verify()
        return cv.audit_trail_to_pb(AuditTrail(tuple(events), head))


__all__: list[Any] = ["CoordinatorService", "allowed_roles"]
