"""Education and health records of a synthetic population, normalised as a node
does, with the true pairs: shared by linkage tests that measure quality."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from headcount.linkage.normalise import Identity, normalise_identity


def load_education_health(
    out: Path,
) -> tuple[list[Identity], list[Identity], frozenset[tuple[int, int]]]:
    """(education identities, health identities, true (education row, health row) pairs)
    from files ``headcount.synth.generate_population`` wrote to ``out``."""

    def load(name: str) -> tuple[list[Identity], dict[str, int]]:
        frame = pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)
        rows = zip(
            frame.first_name,
            frame.last_name,
            frame.date_of_birth,
            frame.sex,
            frame.postcode,
            strict=True,
        )
        position = {rid: i for i, rid in enumerate(frame.record_id)}
        return [normalise_identity(*row) for row in rows], position

    left, left_pos = load("education")
    right, right_pos = load("health")
    gt = pd.read_csv(out / "ground_truth.csv", dtype=str, keep_default_na=False)
    truth = frozenset(
        (left_pos[e], right_pos[h])
        for e, h in zip(gt.education_id, gt.health_id, strict=True)
        if e and h
    )
    return left, right, truth
