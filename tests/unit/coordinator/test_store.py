"""The coordinator's store keeps resolved households beside each token's own key."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from coordinator.store import CoordinatorStore, PairQuality, PartyEncodings
from headcount.errors import UnknownJob

K1, K2, K3 = (bytes([i]) * 16 for i in (1, 2, 3))


def _encodings(party: str, households: list[bytes]) -> PartyEncodings:
    tokens = [f"{party}-{i}".encode().ljust(16, b".") for i in range(len(households))]
    clks = np.zeros((len(tokens), 8), dtype=np.uint8)
    return PartyEncodings(party, tokens, clks, b"c" * 32, households)


def _save(store: CoordinatorStore, epoch: str, resolved: dict[str, list[bytes]] | None) -> None:
    store.save_epoch(
        epoch,
        "ceremony",
        0.7,
        "fingerprint",
        [_encodings("a", [K1, K2, b""]), _encodings("b", [K3, b""])],
        [],
        {},
        resolved_households=resolved,
    )


def test_resolved_keys_round_trip_and_only_changes_are_stored(tmp_path: Path) -> None:
    store = CoordinatorStore(tmp_path / "c.sqlite")
    # a-1 moves to K1, a-2 (no key of its own) gets K3; b keeps its keys.
    _save(store, "e1", {"a": [K1, K1, K3], "b": [K3, b""]})
    tok = [f"a-{i}".encode().ljust(16, b".") for i in range(3)]
    assert store.households("e1", "a") == {tok[0]: K1, tok[1]: K2}
    assert store.resolved_households("e1", "a") == {tok[0]: K1, tok[1]: K1, tok[2]: K3}
    assert store.resolved_households("e1", "b") == store.households("e1", "b")
    with closing(sqlite3.connect(tmp_path / "c.sqlite")) as db:
        stored = db.execute("SELECT party, token FROM resolved_households").fetchall()
    assert sorted(stored) == [("a", tok[1]), ("a", tok[2])]


def test_an_epoch_without_resolution_keeps_each_tokens_own_key(tmp_path: Path) -> None:
    store = CoordinatorStore(tmp_path / "c.sqlite")
    _save(store, "e0", None)
    assert store.resolved_households("e0", "a") == store.households("e0", "a")


def test_resolved_keys_must_cover_every_token(tmp_path: Path) -> None:
    store = CoordinatorStore(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="one resolved household per token"):
        _save(store, "e2", {"a": [K1]})
    with pytest.raises(UnknownJob, match="no epoch"):
        store.epoch("e2")  # nothing of the failed epoch was kept


def test_link_quality_is_typed_in_memory_and_keyed_left_bar_right_on_disk(
    tmp_path: Path,
) -> None:
    store = CoordinatorStore(tmp_path / "c.sqlite")
    quality = {
        ("a", "b"): PairQuality(0.8, 3, 7, est_precision=0.9912, est_recall=0.95, est_f1=0.97),
        ("a", "c"): PairQuality(0.75, 0, 1),  # too few scores to fit
        ("b", "c"): PairQuality(
            0.7, 1, 1, est_precision=1.0, est_recall=0.98, est_f1=0.99, estimate_basis="pooled"
        ),
    }
    store.save_epoch(
        "e1",
        "ceremony",
        0.7,
        "fingerprint",
        [_encodings("a", [K1]), _encodings("b", [K2]), _encodings("c", [K3])],
        [],
        {("a", "b"): 7, ("a", "c"): 1, ("b", "c"): 1},
        quality,
    )
    assert store.epoch("e1").quality == quality
    with closing(sqlite3.connect(tmp_path / "c.sqlite")) as db:
        (raw,) = db.execute("SELECT quality FROM epochs WHERE epoch_id = 'e1'").fetchone()
    # The stored format is the one every earlier release wrote.
    assert raw == (
        '{"a|b": {"est_f1": 0.97, "est_precision": 0.9912, "est_recall": 0.95, '
        '"key_links": 3, "links": 7, "threshold": 0.8}, '
        '"a|c": {"key_links": 0, "links": 1, "threshold": 0.75}, '
        '"b|c": {"est_f1": 0.99, "est_precision": 1.0, "est_recall": 0.98, '
        '"estimate_basis": "pooled", "key_links": 1, "links": 1, "threshold": 0.7}}'
    )
