"""A deviating origin tries to make one record count k times.

Every per-record ciphertext an origin sends (and every E(0) fill) carries a
zero-knowledge proof that it holds a value an honest record can (0 or 1 for a
count; ``headcount.crypto.paillier.proofs``), and the node that receives it
verifies the proof before using it (docs/privacy.md, "Amplification"). Each
game here is an origin that encrypts 5 for one of its records, which would
move a cell by 5 where the noise is sized for 1, and tries to get it past the
receiver: with a proof made for another value set, with an honest proof moved
onto the scaled ciphertext, or with no proof at all (a proof whose challenge
shares are all chosen by the prover is refused in
tests/unit/crypto/test_proofs.py). Every one is refused, no
table is released, and no ledger anywhere is charged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from harness import Federation, make_federation

from headcount.crypto import paillier
from headcount.crypto.paillier.proofs import Prover
from headcount.domain.query import QuerySpec
from headcount.errors import InvalidRequest

PURPOSE = "Check that a deviating department cannot amplify a contribution."
AMPLIFIED = 5


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = make_federation(tmp_path_factory.mktemp("dept-amplify") / "fed", people=400, seed=6)
    try:
        with f.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        yield f
    finally:
        f.stop()


def _spec() -> QuerySpec:
    return QuerySpec(
        purpose=PURPOSE,
        population_party="education",
        group_party="immigration",
        group_by="immigration_status",
        epsilon=0.01,
    )


def _first_one(plain: Sequence[int]) -> int:
    return next(i for i, v in enumerate(plain) if v)


class OtherValues(Prover):
    """Proves the amplified record against {0, 5} instead of the announced {0, 1}."""

    def encrypt(self, plain: Sequence[int]) -> list[bytes]:
        out = super().encrypt(plain)
        if plain and any(plain):
            i = _first_one(plain)
            other = paillier.ProofLayout(self.layout.key, (0, AMPLIFIED), self.layout.context)
            (out[i],) = Prover(other).encrypt([AMPLIFIED])
        return out


class MovedProof(Prover):
    """Keeps an honest proof and swaps its ciphertext for the ciphertext raised to 5."""

    def encrypt(self, plain: Sequence[int]) -> list[bytes]:
        out = super().encrypt(plain)
        if plain and any(plain):
            i = _first_one(plain)
            key = self.layout.key
            width = key.ciphertext_bytes
            c = paillier.from_bytes(key, out[i][:width])
            out[i] = paillier.to_bytes(key, pow(c, AMPLIFIED, key.nsquare)) + out[i][width:]
        return out


GAMES: dict[str, type[Prover]] = {
    "a proof for another value set": OtherValues,
    "an honest proof on a scaled ciphertext": MovedProof,
}


def _play(fed: Federation, monkeypatch: pytest.MonkeyPatch, prover: type[Prover]) -> None:
    coord = fed.coordinator.coordinator
    spent = {p: r.node.ledger.spent() for p, r in fed.nodes.items()}
    releases = sum(e.kind == "release" for e in coord.audit.events())
    # The origin's operator changed its own code.
    monkeypatch.setattr(fed.nodes["education"].node.hops, "prover", prover)
    with fed.analyst() as analyst:
        with pytest.raises(InvalidRequest, match="contribution proof does not verify"):
            analyst.query(_spec())
    monkeypatch.undo()
    assert sum(e.kind == "release" for e in coord.audit.events()) == releases
    refusal = coord.audit.events()[-1]
    assert refusal.kind == "refusal" and "abandonment" in refusal.body
    assert {p: r.node.ledger.spent() for p, r in fed.nodes.items()} == spent
    assert all(coord.budget_spent(p) == spent[p] for p in spent)


@pytest.mark.parametrize("game", list(GAMES))
def test_an_origin_cannot_amplify_one_record(
    fed: Federation, monkeypatch: pytest.MonkeyPatch, game: str
) -> None:
    _play(fed, monkeypatch, GAMES[game])


def test_an_origin_sending_no_proofs_is_refused(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bare ciphertexts (so E(5) could pass) are refused before any node uses them."""

    class NoProof(Prover):
        def encrypt(self, plain: Sequence[int]) -> list[bytes]:
            key = self.layout.key
            enc = paillier.Encryptor.for_public_key(key)
            values = [AMPLIFIED if v else 0 for v in plain]
            return paillier.to_bytes_batch(key, enc.encrypt(values))

    spent = {p: r.node.ledger.spent() for p, r in fed.nodes.items()}
    monkeypatch.setattr(fed.nodes["education"].node.hops, "prover", NoProof)
    with fed.analyst() as analyst:
        with pytest.raises(InvalidRequest, match="wrong width"):
            analyst.query(_spec())
    monkeypatch.undo()
    assert {p: r.node.ledger.spent() for p, r in fed.nodes.items()} == spent


def test_the_honest_origin_still_releases_and_counts_right(fed: Federation) -> None:
    """Untampered, the same query releases: the games fail for their tampering."""
    with fed.analyst() as analyst:
        release = analyst.query(_spec())
    assert len(release.table) > 1
