"""What the origin packs into each per-record plaintext, and how to read it back.

A query's origin encrypts one plaintext per record holding several counters
(``headcount/crypto/packing.py``): one *count* slot per category of the
origin's own group-by attribute (a single slot when there is none), and for a
mean also a *valued* slot (records with a value) and a *sum* slot (the value,
scaled to an integer) per category. The coordinator builds the layout, adds
per-slot noise under encryption, and the origin reads the slots back after
decryption. Both sides build the same ``Packing`` from the same public facts
(the department contract, the key size, the epoch's record counts, epsilon),
and the origin checks the layout it is sent against its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from headcount.crypto import paillier
from headcount.crypto.dp import NoiseSpec
from headcount.crypto.packing import SlotLayout
from headcount.departments import attribute
from headcount.errors import InvalidRequest
from headcount.privacy.noise import interval_halfwidth, margin_bounds
from headcount.protect.sdc import TOTAL, SdcPolicy, protect_counts, protect_counts_2d

COUNT, VALUED, SUM = 0, 1, 2
# Noise is drawn from an unbounded distribution but must fit its slot: it is
# clamped to this many noise scales, which discrete Laplace exceeds with
# probability e^-60 (about 1e-26) per slot: a negligible delta.
NOISE_BOUND_SCALES = 60


@dataclass(frozen=True, slots=True)
class Cell:
    count: int
    valued: int = 0
    total: int = 0  # sum of scaled values


@dataclass(frozen=True, slots=True)
class Packing:
    group_by: str  # the origin's own attribute, "" for none
    categories: tuple[str, ...]  # ("",) when group_by is ""
    measure_attribute: str  # "" for counts only
    scale: int  # measured values are summed as round(value * scale)
    epsilon: float  # the query's whole privacy loss, split over the slot kinds
    layout: SlotLayout
    # L1 sensitivity of the count slots (headcount.privacy.sensitivity) and the
    # number of parties whose noise shares are added to each slot.
    sensitivity: int = 1
    shareholders: int = 1

    @property
    def kinds(self) -> int:
        return 3 if self.measure_attribute else 1

    def slot(self, kind: int, category: int) -> int:
        return kind * len(self.categories) + category

    def noise_specs(self) -> list[NoiseSpec]:
        """One noise spec per slot. One person's record moves the count and
        valued slots by at most ``sensitivity`` and the sum slots by at most
        ``max_value * sensitivity`` (L1), so each kind gets epsilon / kinds with
        that sensitivity (basic composition)."""
        share = self.epsilon / self.kinds
        specs = []
        for kind in range(self.kinds):
            per_record = self.layout.max_value if kind == SUM else 1
            sensitivity = per_record * self.sensitivity
            specs += [NoiseSpec(epsilon=share, sensitivity=sensitivity)] * len(self.categories)
        return specs

    @property
    def share_bound(self) -> int:
        """The largest |noise share| one share-holder adds to a slot."""
        return self.layout.noise_bound // max(1, self.shareholders)

    def pack_share(self, shares: Sequence[Sequence[int]], cell: int) -> int:
        """One share-holder's noise for ``cell`` as a packed plaintext to add:
        ``shares[slot][cell]`` for every slot, each clamped to ``share_bound``."""
        return self.layout.pack_noise(clamp_noise([z[cell] for z in shares], self.share_bound))

    def row(self, passes: bool, category: str, value: str) -> list[int]:
        """One record's slot values: zeros unless it passes the origin's filters."""
        out = [0] * self.layout.slots
        if not passes or category not in self.categories:
            return out
        c = self.categories.index(category)
        out[self.slot(COUNT, c)] = 1
        if self.measure_attribute and value != "":
            out[self.slot(VALUED, c)] = 1
            out[self.slot(SUM, c)] = min(
                self.layout.max_value, max(0, round(float(value) * self.scale))
            )
        return out

    def allowed_values(self) -> tuple[int, ...] | None:
        """Every plaintext an honest origin can send for one record: 0, or a 1 in
        one category's count slot; None for a mean, whose sum slot takes any
        value up to the attribute's maximum (no short proof covers that set;
        docs/privacy.md, "Amplification")."""
        if self.measure_attribute:
            return None
        rows = [self.row(True, category, "") for category in self.categories]
        return (0, *(self.layout.pack(r) for r in rows))

    def read(self, packed_sum: int) -> dict[str, Cell]:
        """Per category: the (noisy) count, valued count and scaled sum."""
        slots = self.layout.unpack(packed_sum)
        out = {}
        for c, category in enumerate(self.categories):
            if self.measure_attribute:
                out[category] = Cell(
                    slots[self.slot(COUNT, c)],
                    slots[self.slot(VALUED, c)],
                    slots[self.slot(SUM, c)],
                )
            else:
                out[category] = Cell(slots[self.slot(COUNT, c)])
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "group_by": self.group_by,
            "categories": list(self.categories),
            "measure_attribute": self.measure_attribute,
            "scale": self.scale,
            "epsilon": self.epsilon,
            "slots": self.layout.slots,
            "slot_bits": self.layout.slot_bits,
            "n_bits": self.layout.n_bits,
            "max_summands": self.layout.max_summands,
            "max_value": self.layout.max_value,
            "noise_bound": self.layout.noise_bound,
            "sensitivity": self.sensitivity,
            "shareholders": self.shareholders,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Packing:
        def num(key: str) -> int:
            return int(str(data[key]))

        return cls(
            str(data["group_by"]),
            tuple(str(c) for c in data["categories"]),  # type: ignore[attr-defined]
            str(data["measure_attribute"]),
            num("scale"),
            float(str(data["epsilon"])),
            SlotLayout(
                num("slots"),
                num("slot_bits"),
                n_bits=num("n_bits"),
                max_summands=num("max_summands"),
                max_value=num("max_value"),
                noise_bound=num("noise_bound"),
            ),
            sensitivity=num("sensitivity") if "sensitivity" in data else 1,
            shareholders=num("shareholders") if "shareholders" in data else 1,
        )


@dataclass(frozen=True, slots=True)
class PackingRequest:
    """The layout a coordinator asks the origin to use, as it travels on the wire."""

    group_by: str
    measure_attribute: str
    slots: int
    slot_bits: int
    max_summands: int
    max_value: int
    noise_bound: int

    @classmethod
    def of(cls, p: Packing) -> PackingRequest:
        lay = p.layout
        return cls(
            p.group_by,
            p.measure_attribute,
            lay.slots,
            lay.slot_bits,
            lay.max_summands,
            lay.max_value,
            lay.noise_bound,
        )


def make_packing(
    party: str,
    group_by: str,
    measure_attribute: str,
    *,
    n_bits: int,
    max_summands: int,
    epsilon: float,
    sensitivity: int = 1,
    shareholders: int = 1,
) -> Packing:
    """The layout for a query's origin ``party``; InvalidRequest if it cannot fit.

    ``max_summands`` bounds how many per-record plaintexts any aggregate adds
    (the epoch's total record count is always safe). ``sensitivity`` and
    ``shareholders`` come from the query's noise plan: each of the
    share-holders adds a share clamped to 60 scales of the full noise.
    """
    categories: tuple[str, ...] = ("",)
    if group_by:
        categories = attribute(party, group_by).categories
        if not categories:
            raise InvalidRequest(f"{party}.{group_by} is numeric; it cannot be a table dimension")
    scale, max_value = 1, 1
    if measure_attribute:
        attr = attribute(party, measure_attribute)
        if not attr.is_numeric or attr.maximum is None:
            raise InvalidRequest(f"{party}.{measure_attribute} is not a bounded numeric attribute")
        scale = attr.scale
        max_value = max(1, math.ceil(attr.maximum * scale))
    kinds = 3 if measure_attribute else 1
    biggest_scale = max(1, max_value) * sensitivity * kinds / epsilon
    noise_bound = (math.ceil(NOISE_BOUND_SCALES * biggest_scale) + 1) * max(1, shareholders)
    try:
        layout = SlotLayout.fit(
            kinds * len(categories),
            n_bits=n_bits,
            max_summands=max_summands,
            max_value=max_value,
            noise_bound=noise_bound,
        )
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"{len(categories)} categories x {kinds} counters do not fit one "
            f"{n_bits}-bit plaintext ({exc})"
        ) from None
    return Packing(
        group_by, categories, measure_attribute, scale, epsilon, layout, sensitivity, shareholders
    )


def clamp_noise(noise: Sequence[int], bound: int) -> list[int]:
    """Noise limited to +-bound (exceeded with negligible probability; see above)."""
    return [max(-bound, min(bound, z)) for z in noise]


@dataclass(frozen=True, slots=True)
class ReleasedCell:
    """One cell of a released table; margins have group or column "Total".

    ``interval`` holds the true count in 95% of releases (noise and rounding);
    ``mean_interval`` likewise for the mean. Both None when withheld.
    """

    group: str
    column: str  # "" for a one-way table
    value: int | None
    status: str
    mean: float | None = None
    sum: float | None = None  # of the measured attribute, in its own units
    noise_scale: float = 0.0  # discrete Laplace scale of the count's noise
    interval: tuple[int, int] | None = None
    mean_interval: tuple[float, float] | None = None


ALL_GROUP = "all"  # the one group of a hop that sums without grouping


def protect_release(
    packing: Packing, groups: Sequence[tuple[str, dict[str, Cell]]], policy: SdcPolicy
) -> tuple[list[ReleasedCell], int | None, bool]:
    """Apply the small-number rule (and secondary suppression) to decrypted cells.

    Returns the cells, the total (None if withheld) and whether the table is
    two-way. Grouped only by the origin's own attribute (one ``all`` group),
    the table is one-way over the origin's categories. A mean is released only
    with its count, and only when the number of records with a value also
    reaches the threshold; it is clamped to the attribute's range and rounded
    to 3 decimals.
    """
    if packing.group_by and [g for g, _ in groups] == [ALL_GROUP]:
        by_category = [(cat, {"": cell}) for cat, cell in groups[0][1].items()]
        flat = Packing(
            "",
            ("",),
            packing.measure_attribute,
            packing.scale,
            packing.epsilon,
            packing.layout,
            packing.sensitivity,
            packing.shareholders,
        )
        cells, total, _ = protect_release(flat, by_category, policy)
        return cells, total, False

    def mean(cell: Cell) -> float | None:
        if not packing.measure_attribute or cell.valued < policy.threshold:
            return None
        # The noisy sum over the noisy count, as it is: its interval
        # (with_intervals) says how far it may be from the truth.
        return round(cell.total / cell.valued / packing.scale, 3)

    def summed(cell: Cell) -> float | None:
        # Post-processing of the same noisy slots: costs no further privacy.
        if not packing.measure_attribute or cell.valued < policy.threshold:
            return None
        # As it is, like the mean: negative when noise outweighs a small sum.
        return round(cell.total / packing.scale, 1)

    if not packing.group_by:
        table = protect_counts({g: cells[""].count for g, cells in groups}, policy)
        by_group = dict(groups)
        out = [
            ReleasedCell(
                c.group,
                "",
                c.value,
                c.status,
                mean(by_group[c.group][""]) if c.value is not None else None,
                summed(by_group[c.group][""]) if c.value is not None else None,
            )
            for c in table.cells
        ]
        return out, table.total, False
    counts = {(g, cat): cell.count for g, cells in groups for cat, cell in cells.items()}
    table2 = protect_counts_2d(counts, policy)
    lookup = {(g, cat): cell for g, cells in groups for cat, cell in cells.items()}
    out = [
        ReleasedCell(
            c.row,
            c.column,
            c.value,
            c.status,
            mean(lookup[(c.row, c.column)]) if c.value is not None else None,
            summed(lookup[(c.row, c.column)]) if c.value is not None else None,
        )
        for c in table2.cells
    ]
    out += [ReleasedCell(m.group, TOTAL, m.value, m.status) for m in table2.row_totals]
    out += [ReleasedCell(TOTAL, m.group, m.value, m.status) for m in table2.column_totals]
    return out, table2.total, True


COVERAGE = 0.95


@dataclass(frozen=True, slots=True)
class WithIntervals:
    cells: list[ReleasedCell]
    total_interval: tuple[int, int] | None
    noise_scale: float  # of each count cell


def with_intervals(
    packing: Packing,
    cells: Sequence[ReleasedCell],
    total: int | None,
    policy: SdcPolicy,
    decoded: Mapping[tuple[str, str], Cell] | None = None,
) -> WithIntervals:
    """Each released cell with its noise scale and a 95% interval for the truth.

    A count's noise is the sum of every share-holder's share
    (``headcount.privacy.noise``); rounding adds at most half the rounding
    base. A margin sums k noisy cells, negatives as 0; its interval comes from
    the exact distributions of the k noises' sum and of their positive parts'
    sum (``margin_bounds``). A mean's interval divides the sum's
    interval by the count's, each at 97.5%, within the attribute's declared
    range. Post-processing only: it costs no privacy.
    """
    specs = packing.noise_specs()
    count_scale = specs[0].scale
    holders = max(2, packing.shareholders)
    slack = policy.rounding_base // 2
    width = len(packing.categories)

    def around(value: int, k: int) -> tuple[int, int]:
        if k == 1:
            h = interval_halfwidth(count_scale, holders, COVERAGE)
            return max(0, value - h - slack), value + h + slack
        above, below = margin_bounds(count_scale, holders, k, COVERAGE)
        return max(0, value - above - slack), value + below + slack

    def mean_bounds(cell: Cell) -> tuple[float, float] | None:
        if not packing.measure_attribute:
            return None
        sum_scale = specs[SUM * width].scale
        h_sum = interval_halfwidth(sum_scale, holders, 1 - (1 - COVERAGE) / 2)
        h_count = interval_halfwidth(count_scale, holders, 1 - (1 - COVERAGE) / 2)
        top = float(packing.layout.max_value)
        low = (cell.total - h_sum) / (cell.valued + h_count) if cell.valued + h_count > 0 else 0.0
        low = max(0.0, low)
        high = (cell.total + h_sum) / (cell.valued - h_count) if cell.valued - h_count > 0 else top
        high = min(top, max(high, 0.0))
        return round(min(low, high) / packing.scale, 3), round(high / packing.scale, 3)

    out = []
    for c in cells:
        k = 1
        if c.group == TOTAL or c.column == TOTAL:
            k = sum(
                1
                for x in cells
                if TOTAL not in (x.group, x.column)
                and (x.group == c.group if c.column == TOTAL else x.column == c.column)
            )
        interval = around(c.value, max(1, k)) if c.value is not None else None
        cell = decoded.get((c.group, c.column)) if decoded is not None else None
        out.append(
            ReleasedCell(
                c.group,
                c.column,
                c.value,
                c.status,
                c.mean,
                c.sum,
                count_scale,
                interval,
                mean_bounds(cell) if cell is not None and c.mean is not None else None,
            )
        )
    inner = sum(1 for x in cells if TOTAL not in (x.group, x.column))
    total_interval = around(total, max(1, inner)) if total is not None else None
    return WithIntervals(out, total_interval, count_scale)


def decoded_cells(
    packing: Packing, groups: Sequence[tuple[str, dict[str, Cell]]]
) -> dict[tuple[str, str], Cell]:
    """Decoded slots keyed as ``protect_release`` names its cells: (group, column)."""
    by_origin = bool(packing.group_by) and [g for g, _ in groups] == [ALL_GROUP]
    out: dict[tuple[str, str], Cell] = {}
    for g, per_category in groups:
        for cat, cell in per_category.items():
            if by_origin:
                out[(cat, "")] = cell
            elif not packing.group_by:
                out[(g, "")] = cell
            else:
                out[(g, cat)] = cell
    return out


def contribution_layout(
    packing: Packing, key: paillier.PublicKey, query_id: str, *, proofs: bool
) -> paillier.ProofLayout | None:
    """What the origin's per-record ciphertexts (and its E(0) fills) must prove
    they hold, or None when they travel unproven: proofs off, or a mean (see
    ``Packing.allowed_values``). Origin, coordinator and receiver each derive it
    from the same public facts; the query id binds each proof to its query."""
    values = packing.allowed_values() if proofs else None
    if values is None:
        return None
    return paillier.ProofLayout(key, values, query_id.encode())
