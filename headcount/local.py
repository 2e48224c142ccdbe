"""A whole federation inside one process, on loopback, for the attack suite,
benchmarks and tests: the real servers over mutual TLS, started by the same
``start`` functions as ``headcount node serve`` and ``headcount coordinator serve``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from coordinator import server as coordinator_server
from headcount import rpc
from headcount.client import Client
from headcount.config import FederationConfig
from headcount.federation import InitOptions, init_federation
from headcount.synth import REFERENCE_DATE, generate_population
from party_node import server as node_server


@dataclass
class LocalFederation:
    directory: Path
    config: FederationConfig
    nodes: dict[str, node_server.RunningNode]
    coordinator: coordinator_server.RunningCoordinator
    ground_truth: Path
    _stopped: bool = field(default=False, repr=False)

    def operator(self) -> Client:
        return Client(self.config)

    def analyst(self) -> Client:
        return Client(self.config, analyst=self.config.analysts[0].name)

    def record_ids(self, party: str, epoch_id: str) -> dict[bytes, str]:
        """``party``'s token -> record id in the epoch, from the node's own state.

        For evaluation only: in a real federation only the node can map its
        tokens to records; this process holds every node."""
        tokens, rows = self.nodes[party].node.store.token_rows(epoch_id)
        ids = pd.read_csv(self.config.party(party).data, dtype=str, keep_default_na=False)
        return {t: ids["record_id"].iloc[r] for t, r in zip(tokens, rows, strict=True)}

    def linked_record_ids(self, epoch_id: str, a: str, b: str) -> set[tuple[str, str]]:
        """The (record id at ``a``, record id at ``b``) pairs the epoch linked
        (for evaluation against ground truth, as `record_ids`)."""
        linked = self.coordinator.coordinator.store.linked(epoch_id, a, b)
        ids_a, ids_b = self.record_ids(a, epoch_id), self.record_ids(b, epoch_id)
        return {(ids_a[left], ids_b[right]) for right, left in linked.items()}

    def approve_project(
        self,
        project_id: str,
        title: str,
        purpose: str,
        *,
        parties: Sequence[str] | None = None,
        expires: dt.date | None = None,
    ) -> None:
        """Propose a project as the first analyst and approve it as the steward of
        each department it names (all by default; expiring in 30 days by default):
        here one process stands in for every steward."""
        parties = list(parties or self.config.party_names)
        with self.analyst() as analyst:
            analyst.propose_project(
                project_id,
                title,
                purpose,
                parties,
                expires or dt.date.today() + dt.timedelta(days=30),
            )
        for party in parties:
            with Client(self.config, steward=party) as steward:
                steward.approve_project(project_id)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.coordinator.server.stop(grace=None)
        self.coordinator.coordinator.close()
        for n in self.nodes.values():
            n.server.stop(grace=None)
            n.node.close()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_federation(
    directory: Path,
    *,
    people: int,
    seed: int,
    paillier_bits: int = 1024,
    node_interceptors: dict[str, Sequence[rpc.ServerInterceptor]] | None = None,
    coordinator_interceptors: Sequence[rpc.ClientInterceptor] = (),
    **options: Any,
) -> LocalFederation:
    """Create a federation and its synthetic data under ``directory`` and start it.

    ``options`` override ``InitOptions`` fields (e.g. the output policy). The
    ground truth is moved to ``directory/evaluation`` where no node reads it.
    """
    cfg = init_federation(
        directory,
        InitOptions(
            paillier_bits=paillier_bits,
            insecure_test_keys=paillier_bits < 2048,
            reference_date=REFERENCE_DATE,
            **options,
        ),
    )
    generate_population(people, seed, directory / "data")
    truth = directory / "evaluation" / "ground_truth.csv"
    truth.parent.mkdir()
    shutil.move(directory / "data" / "ground_truth.csv", truth)
    interceptors = node_interceptors or {}
    nodes = {
        p: node_server.start(cfg, p, interceptors=interceptors.get(p, ())) for p in cfg.party_names
    }
    coord = coordinator_server.start(cfg, node_interceptors=coordinator_interceptors)
    return LocalFederation(directory, cfg, nodes, coord, truth)
