"""Department files as the privacy games rewrite them, and what the adversary
knows from outside: who is whom (the evaluation's ground truth) and how the
latest epoch links everyone else."""

from __future__ import annotations

import io
import secrets
from collections.abc import Collection, Sequence
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from headcount.attacks.games import new_period, relink
from headcount.domain.query import unlinked_group
from headcount.local import LocalFederation


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


class DataFiles:
    """Department files a game rewrites through the node's own data path.

    On exit each is restored byte for byte, the federation relinked and a new
    period started, so the next attack meets the federation as it was.
    """

    def __init__(self, fed: LocalFederation, parties: Sequence[str]) -> None:
        self._fed = fed
        self._paths = {p: fed.config.party(p).data for p in parties}
        self._original = {p: path.read_bytes() for p, path in self._paths.items()}

    def original(self, party: str) -> pd.DataFrame:
        """``party``'s file as it was before the game."""
        return pd.read_csv(io.BytesIO(self._original[party]), dtype=str, keep_default_na=False)

    def write(self, party: str, frame: pd.DataFrame) -> None:
        frame.to_csv(self._paths[party], index=False)

    def __enter__(self) -> DataFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for party, path in self._paths.items():
            path.write_bytes(self._original[party])
        relink(self._fed)
        new_period(self._fed)


def truth(fed: LocalFederation) -> pd.DataFrame:
    """The evaluation's ground truth: who is whom (the adversary's outside knowledge)."""
    frame = read_csv(fed.ground_truth)
    frame["age"] = frame["age"].astype(int)
    return frame


# Each department's date format (headcount.synth writes them this way).
DATE_FORMATS = {
    "education": "%Y-%m-%d",
    "health": "%d/%m/%Y",
    "justice": "%d %b %Y",
    "immigration": "%Y%m%d",
}
_SYLLABLES = ("ka", "zu", "mir", "tol", "vex", "qua", "bri", "nod", "sel", "ruk", "yan", "fip")


def _made_up_name() -> str:
    return "".join(secrets.choice(_SYLLABLES) for _ in range(3)).capitalize()


def fabricated(template: pd.DataFrame, n: int, party: str, born: tuple[int, int]) -> pd.DataFrame:
    """``n`` records of people nobody else holds, in ``party``'s file format.

    Attributes are copied from ``template``'s rows in turn; names, date of
    birth (a year in ``born``, inclusive), postcode and address are made up.
    """
    rows = template.iloc[[i % len(template) for i in range(n)]].copy()
    first = date(born[0], 1, 1)
    days = (date(born[1], 12, 31) - first).days
    rows["record_id"] = [f"FAB-{secrets.token_hex(6)}" for _ in range(n)]
    rows["first_name"] = [_made_up_name() for _ in range(n)]
    rows["last_name"] = [_made_up_name() for _ in range(n)]
    rows["date_of_birth"] = [
        (first + timedelta(days=secrets.randbelow(days + 1))).strftime(DATE_FORMATS[party])
        for _ in range(n)
    ]
    rows["postcode"] = [
        f"QZ{secrets.randbelow(90) + 10} {secrets.randbelow(9) + 1}XJ" for _ in range(n)
    ]
    rows["address"] = [f"{secrets.randbelow(900) + 1} {_made_up_name()} Row" for _ in range(n)]
    return rows


def linked(fed: LocalFederation, population: str, party: str) -> dict[str, str]:
    """``population``'s record ids -> the ``party`` record each is linked to in
    the latest epoch (for the adversary's knowledge of everyone else)."""
    epoch = fed.coordinator.coordinator.store.latest_epoch()
    return dict(fed.linked_record_ids(epoch, population, party))


def person_groups(
    fed: LocalFederation, population: str, ids: Collection[str], party: str, attribute: str
) -> dict[str, str]:
    """The group each ``population`` record falls in when a person chain groups
    it by ``party``'s ``attribute`` in the latest epoch: the linked record's
    value, or the unlinked cell."""
    link = linked(fed, population, party)
    frame = read_csv(fed.config.party(party).data).set_index("record_id")[attribute]
    return {i: str(frame[link[i]]) if i in link else unlinked_group(party) for i in ids}
