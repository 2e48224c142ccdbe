"""The hardening levels the CLK attacks are measured against (benchmarks,
tests and docs name them the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headcount.linkage.clk import decoy_clks, encode_clks, fill_rates
from headcount.linkage.clk_schema import ClkSchema
from headcount.linkage.normalise import Identity
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA

__all__ = ["LEVELS", "HardeningLevel"]

_NAMES = ("first_name", "last_name")


@dataclass(frozen=True, slots=True)
class HardeningLevel:
    """A CLK schema, the share of decoys added and the Dice threshold links use."""

    schema: ClkSchema
    decoy_share: float = 0.0
    threshold: float = DEFAULT_LINKAGE_SCHEMA.threshold

    def encode(
        self, identities: Sequence[Identity], secret: bytes, rng: np.random.Generator
    ) -> np.ndarray:
        """CLKs of ``identities`` followed by this level's decoys (real rows keep their index)."""
        clks = encode_clks(identities, secret, self.schema, rng=rng)
        if not self.decoy_share:
            return clks
        decoys = decoy_clks(
            round(len(clks) * self.decoy_share), self.schema.clk_bits, fill_rates(clks), rng
        )
        return np.vstack([clks, decoys])


_PLAIN = ClkSchema(fields=DEFAULT_LINKAGE_SCHEMA.clk.fields, filter_bits=1024)
LEVELS: dict[str, HardeningLevel] = {
    "none": HardeningLevel(_PLAIN),
    "default": HardeningLevel(DEFAULT_LINKAGE_SCHEMA.clk, DEFAULT_LINKAGE_SCHEMA.decoy_share),
    "balance": HardeningLevel(ClkSchema(balance=True)),
    "xor_fold": HardeningLevel(ClkSchema(xor_fold=True)),
    "salt_birth_year": HardeningLevel(ClkSchema(salt_source="birth_year", salted_fields=_NAMES)),
    "flip_0.02": HardeningLevel(ClkSchema(flip_probability=0.02)),
    "flip_0.05": HardeningLevel(ClkSchema(flip_probability=0.05)),
    "decoys_10pct": HardeningLevel(_PLAIN, 0.1),
    # The default this module proposes (issue #6): folding, with the Dice
    # threshold lowered to where folded scores of true pairs fall.
    "proposed_default": HardeningLevel(ClkSchema(xor_fold=True), threshold=0.7),
    "xor_fold+salt": HardeningLevel(
        ClkSchema(xor_fold=True, salt_source="birth_year", salted_fields=_NAMES)
    ),
    "balance+flip_0.02": HardeningLevel(ClkSchema(balance=True, flip_probability=0.02)),
}
