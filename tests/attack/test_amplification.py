"""A deviating coordinator tries to amplify one record's contribution.

(A deviating department's games are in test_department_amplification.py.)

The coordinator places every ciphertext between hops, sums nothing and makes
none of its own (docs/privacy.md, "Amplification"). Each game here is one way
a coordinator would try anyway: scale a linked ciphertext (E(x)^k), hand one on
twice, put its own encryption in place of a fill, inject into the unlinked
cell, add to the grouping node's output before the noise, or send the origin a
"noise share" beyond the share bound. Every one is refused by the node that
checks it, no table is released, and, because the origin abandons the query,
no ledger anywhere is charged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import Federation, make_federation

import coordinator.alignment as alignment_module
import coordinator.executor as executor_module
from headcount.crypto import paillier
from headcount.departments import ADULT_AGE_BANDS
from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.errors import InvalidRequest
from headcount.wire.node_values import GroupedCiphertexts, HopInput

PURPOSE = "Check that a deviating coordinator cannot amplify a contribution."


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = make_federation(tmp_path_factory.mktemp("amplify") / "fed", people=400, seed=5)
    try:
        with f.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        yield f
    finally:
        f.stop()


def _spec(chain: str = "person") -> QuerySpec:
    if chain == "household":
        # Pupils living with an adult in custody: justice -> (household) -> education.
        return QuerySpec(
            purpose=PURPOSE,
            population_party="education",
            group_party="education",
            group_by="local_authority",
            conditions=(
                Condition(
                    "justice",
                    (Predicate("sentence", ("custody",)), Predicate("age_band", ADULT_AGE_BANDS)),
                    link="household",
                ),
            ),
            epsilon=0.01,
        )
    conditions = (
        (Condition("health", (Predicate("gp_registered", ("N",)),)),) if chain == "filter" else ()
    )
    return QuerySpec(
        purpose=PURPOSE,
        population_party="education",
        group_party="immigration",
        group_by="immigration_status",
        conditions=conditions,
        epsilon=0.01,
    )


def _key(fed: Federation) -> paillier.PublicKey:
    return fed.coordinator.coordinator.executor.origin_key("education")


Tamper = Callable[[Federation, pytest.MonkeyPatch], None]


def _on_alignment(
    change: Callable[[paillier.PublicKey, list[bytes]], None], origin: str = "education"
) -> Tamper:
    def install(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
        key = fed.coordinator.coordinator.executor.origin_key(origin)
        for name in ("person_align", "household_align"):
            real = getattr(alignment_module, name)

            def tampered(*args: Any, real: Any = real, **kwargs: Any) -> list[bytes]:
                out: list[bytes] = real(*args, **kwargs)
                change(key, out)
                return out

            monkeypatch.setattr(alignment_module, name, tampered)

    return install


def _scale(key: paillier.PublicKey, out: list[bytes]) -> None:
    # An origin's ciphertext carries its proof after it: scale the ciphertext, keep the rest.
    width = key.ciphertext_bytes
    c = paillier.from_bytes(key, out[0][:width])
    out[0] = paillier.to_bytes(key, pow(c, 5, key.nsquare)) + out[0][width:]


def _twice(key: paillier.PublicKey, out: list[bytes]) -> None:
    out[1] = out[0]


def _own(key: paillier.PublicKey, out: list[bytes]) -> None:
    if len(out[-1]) == key.ciphertext_bytes:
        enc = paillier.Encryptor.for_public_key(key)
        out[-1] = paillier.to_bytes(key, enc.encrypt([1])[0])
        return
    # Proofs need only the public key: the coordinator can prove its own E(1).
    layout = paillier.ProofLayout(key, (0, 1), b"the coordinator's own")
    (out[-1],) = paillier.Prover(layout).encrypt([1])


def _unlinked(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    client = fed.coordinator.coordinator.nodes.node("immigration")
    real = client.aggregate_by_group

    def tampered(hop: HopInput) -> GroupedCiphertexts:
        if hop.leftovers:
            # One record counted twice.
            hop = dataclasses.replace(hop, leftovers=[*hop.leftovers, hop.leftovers[0]])
        return real(hop)

    monkeypatch.setattr(client, "aggregate_by_group", tampered)


def _after_grouping(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    client = fed.coordinator.coordinator.nodes.node("immigration")
    real = client.aggregate_by_group
    key = _key(fed)

    def adds_to_the_output(hop: HopInput) -> GroupedCiphertexts:
        reply = real(hop)
        (group, first), *rest = reply.groups
        c = paillier.add_plain(key, paillier.from_bytes(key, first), 7)
        return dataclasses.replace(reply, groups=((group, paillier.to_bytes(key, c)), *rest))

    monkeypatch.setattr(client, "aggregate_by_group", adds_to_the_output)


def _big_share(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        executor_module, "clamp_noise", lambda noise, bound: [bound + 1] * len(noise)
    )


GAMES: dict[str, tuple[Tamper, str, str]] = {
    "scale a linked ciphertext": (_on_alignment(_scale), "not in education's signed set", "person"),
    "hand one on twice": (_on_alignment(_twice), "handed on twice", "person"),
    "own encryption for a fill": (_on_alignment(_own), "not in education's signed set", "person"),
    "scale through a filter node": (_on_alignment(_scale), "signed set", "filter"),
    "scale a household flag": (
        _on_alignment(_scale, origin="justice"),
        "not in justice's signed set",
        "household",
    ),
    "hand a household flag on twice": (
        _on_alignment(_twice, origin="justice"),
        "handed on twice",
        "household",
    ),
    "inject into the unlinked cell": (_unlinked, "handed on twice", "person"),
    "add to the grouped output": (_after_grouping, "other aggregates", "person"),
    "noise share beyond its bound": (_big_share, "outside", "person"),
}


@pytest.mark.parametrize("game", list(GAMES))
def test_a_coordinator_cannot_amplify(
    fed: Federation, monkeypatch: pytest.MonkeyPatch, game: str
) -> None:
    tamper, reason, chain = GAMES[game]
    coord = fed.coordinator.coordinator
    spent = {p: r.node.ledger.spent() for p, r in fed.nodes.items()}
    releases = sum(e.kind == "release" for e in coord.audit.events())
    tamper(fed, monkeypatch)
    with fed.analyst() as analyst:
        with pytest.raises(InvalidRequest, match=reason):
            analyst.query(_spec(chain))
    assert sum(e.kind == "release" for e in coord.audit.events()) == releases
    refusal = coord.audit.events()[-1]
    assert refusal.kind == "refusal" and "abandonment" in refusal.body
    # The origin signed that it will never decrypt: every node refunded.
    assert {p: r.node.ledger.spent() for p, r in fed.nodes.items()} == spent
    assert all(coord.budget_spent(p) == spent[p] for p in spent)


def test_the_honest_chain_still_releases(fed: Federation) -> None:
    """The same queries, untampered, release (the games fail for their tampering)."""
    with fed.analyst() as analyst:
        for chain in ("person", "filter", "household"):
            release = analyst.query(_spec(chain))
            assert len(release.table) > 1
