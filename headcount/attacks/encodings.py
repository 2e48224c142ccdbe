"""A curious coordinator attacking the stored encodings."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import numpy as np
import pandas as pd

from headcount.attacks import AttackResult
from headcount.linkage.clk import encode_clks
from headcount.linkage.dice import score_pairs
from headcount.linkage.normalise import normalise_identity
from headcount.local import LocalFederation

FIELDS = ("first_name", "last_name", "date_of_birth", "sex", "postcode")


def dictionary_without_secret(fed: LocalFederation) -> AttackResult:
    """The coordinator knows the true identities of everyone (a perfect
    dictionary) but not the linkage secret: it encodes them under guessed keys
    and looks for matches among the stored CLKs."""
    coordinator = fed.coordinator.coordinator
    epoch = coordinator.store.latest_epoch()
    with closing(sqlite3.connect(coordinator.store.path)) as db:
        rows = db.execute(
            "SELECT clk FROM encodings WHERE epoch_id = ? AND party = 'health'", (epoch,)
        ).fetchall()
    stored = np.frombuffer(b"".join(bytes(r[0]) for r in rows), dtype=np.uint8).reshape(
        len(rows), -1
    )
    truth = pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False).head(500)
    dictionary = [normalise_identity(*(str(r[c]) for c in FIELDS)) for _, r in truth.iterrows()]
    guesses = 5
    hits = 0
    schema = coordinator.schema.clk
    for _ in range(guesses):
        guessed = encode_clks(dictionary, os.urandom(32), schema)
        hits += len(score_pairs(guessed, stored, coordinator.schema.threshold))
    rate = hits / (guesses * len(dictionary))
    return AttackResult(
        "dictionary-without-secret",
        "coordinator",
        f"true identities of {len(dictionary)} people, {guesses} guessed keys",
        f"{hits} dictionary entries matched a stored CLK at Dice >= {coordinator.schema.threshold}",
        min(1.0, rate),
        attempts=guesses * len(dictionary),
    )
