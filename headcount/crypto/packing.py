"""Several small counters packed into one Paillier plaintext.

A per-record plaintext carries ``slots`` counters of ``slot_bits`` bits each:
packed = sum(v_j * 2^(j * slot_bits)), slot 0 in the lowest bits. Homomorphic
addition adds slot by slot, so one ciphertext sum yields every counter's sum, as
long as no slot carries into the next. ``SlotLayout`` makes that a checked
property instead of a hope: it is built from the bounds the protocol states
(values per record, records per sum, noise per slot) and refuses, when it is
built or when a value is packed, anything that could carry.

Signed noise: slots use a balanced (two's complement-like) representation, so a
slot may hold any integer in [-2^(slot_bits-1), 2^(slot_bits-1)). Differential-
privacy noise is packed with ``pack_noise`` (negative entries allowed) and added
with ``paillier.add_plain``; a negative packed total is fine because Paillier
decrypts to a signed integer. ``unpack`` reads the digits back from the bottom,
borrowing from the next slot whenever a digit is negative. We chose this over
adding a fixed offset to each slot before summation (and subtracting it after)
because an offset must be added exactly once per aggregate, and a sum that gets
it twice or not at all decodes to plausible wrong counts; balanced digits need no
bookkeeping and cost the same one bit of headroom per slot.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import SupportsIndex, cast

from headcount.errors import InvalidRequest

# Bits of the modulus left unused above the top slot. A packed value's magnitude
# is below 2^(total_bits - 1), and Paillier (like phe) decodes m as signed only in
# (-n/3, n/3); n >= 2^(n_bits - 1) makes 2 spare bits enough, and 8 leaves room
# for a caller's slip of a few bits without wrapping mod n.
SAFETY_MARGIN_BITS = 8


def _as_int(what: str, value: object) -> int:
    """``value`` as an int (numpy integers welcome); InvalidRequest for bools, floats, etc."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be an int, not a bool")
    try:
        return operator.index(cast(SupportsIndex, value))
    except TypeError:
        raise InvalidRequest(f"{what} must be an int, got {type(value).__name__}") from None


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """How counters share one plaintext, and the bounds that keep them apart.

    ``slots``: counters per plaintext, >= 1.
    ``slot_bits``: width of each slot in bits, >= 2.
    ``n_bits``: bit length of the Paillier modulus n; slots * slot_bits may use at
    most n_bits - ``SAFETY_MARGIN_BITS``.
    ``max_summands``: the most per-record plaintexts added into one aggregate, >= 1.
    ``max_value``: the largest per-record value in any slot, >= 0 (1 for 0/1
    indicators); per-record values are in [0, max_value].
    ``noise_bound``: the largest |noise| added to any slot of an aggregate, >= 0.

    Every slot of an aggregate lies in [-noise_bound, max_value * max_summands +
    noise_bound], and that interval must fit in a balanced slot:
    max_value * max_summands + noise_bound < 2^(slot_bits - 1).
    Raises ``InvalidRequest`` if it does not, or any field is out of range.
    """

    slots: int
    slot_bits: int
    _: KW_ONLY
    n_bits: int
    max_summands: int
    max_value: int = 1
    noise_bound: int = 0

    def __post_init__(self) -> None:
        for name, low in (
            ("slots", 1),
            ("slot_bits", 2),
            ("n_bits", 64),
            ("max_summands", 1),
            ("max_value", 0),
            ("noise_bound", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(f"{name} must be an int, got {type(value).__name__}")
            if value < low:
                raise InvalidRequest(f"{name} must be >= {low}, got {value}")
        usable = self.n_bits - SAFETY_MARGIN_BITS
        if self.slots * self.slot_bits > usable:
            raise InvalidRequest(
                f"{self.slots} slots of {self.slot_bits} bits need "
                f"{self.slots * self.slot_bits} bits; a {self.n_bits}-bit key has {usable}"
            )
        if self.slot_limit >= 1 << (self.slot_bits - 1):
            raise InvalidRequest(
                f"a slot may reach {self.slot_limit} (max_value {self.max_value} x "
                f"max_summands {self.max_summands} + noise_bound {self.noise_bound}), "
                f"which needs slot_bits >= {_bits_for(self.slot_limit)}, got {self.slot_bits}"
            )

    @classmethod
    def fit(
        cls,
        slots: int,
        *,
        n_bits: int,
        max_summands: int,
        max_value: int = 1,
        noise_bound: int = 0,
    ) -> SlotLayout:
        """The narrowest layout for these bounds; ``InvalidRequest`` if it does not fit."""
        limit = _as_int("max_value", max_value) * _as_int("max_summands", max_summands)
        slot_bits = _bits_for(limit + _as_int("noise_bound", noise_bound))
        return cls(
            slots,
            slot_bits,
            n_bits=n_bits,
            max_summands=max_summands,
            max_value=max_value,
            noise_bound=noise_bound,
        )

    @staticmethod
    def capacity(n_bits: int, slot_bits: int) -> int:
        """How many slots of ``slot_bits`` bits a ``n_bits``-bit key holds."""
        return max(0, (n_bits - SAFETY_MARGIN_BITS) // max(1, slot_bits))

    @property
    def slot_limit(self) -> int:
        """Largest |slot| an aggregate within the declared bounds can hold."""
        return self.max_value * self.max_summands + self.noise_bound

    @property
    def total_bits(self) -> int:
        return self.slots * self.slot_bits

    def pack(self, values: Sequence[int]) -> int:
        """One record's counters as a plaintext; each value in [0, max_value].

        Raises ``InvalidRequest`` for the wrong number of values or any value out
        of range (the message names the slot, never the value).
        """
        return self._pack(values, 0, self.max_value, "value")

    def pack_rows(self, rows: Iterable[Sequence[int]]) -> list[int]:
        """``pack`` for each record's row of values."""
        return [self.pack(row) for row in rows]

    def pack_noise(self, noise: Sequence[int]) -> int:
        """Per-slot signed noise as one plaintext to add to an aggregate.

        Each entry in [-noise_bound, noise_bound]; the result may be negative
        (add it with ``paillier.add_plain``). Raises ``InvalidRequest`` otherwise.
        """
        return self._pack(noise, -self.noise_bound, self.noise_bound, "noise")

    def check_summands(self, count: int) -> None:
        """Raise ``InvalidRequest`` if ``count`` records exceed ``max_summands``.

        Call it before adding per-record ciphertexts into one aggregate: beyond
        the declared bound a slot could carry into its neighbour.
        """
        if _as_int("count", count) > self.max_summands:
            raise InvalidRequest(
                f"{count} summands exceed this layout's max_summands of {self.max_summands}"
            )

    def unpack(self, packed: int) -> list[int]:
        """Per-slot values of a (noisy) aggregate, slot 0 first; signed.

        Raises ``InvalidRequest`` if ``packed`` cannot be a sum within the declared
        bounds: bits above the top slot, or a slot outside [-noise_bound,
        max_value * max_summands + noise_bound]. That catches most overflows and
        malformed aggregates, though not every one; the guarantee is ``pack`` and
        ``check_summands``.
        """
        rest = _as_int("packed", packed)
        width = self.slot_bits
        mask = (1 << width) - 1
        half = 1 << (width - 1)
        low, high = -self.noise_bound, self.slot_limit
        out: list[int] = []
        for j in range(self.slots):
            digit = rest & mask
            if digit >= half:
                digit -= 1 << width
            if not low <= digit <= high:
                raise InvalidRequest(f"slot {j} is outside the layout's declared bounds")
            out.append(digit)
            rest = (rest - digit) >> width
        if rest:
            raise InvalidRequest("packed value has bits above the top slot")
        return out

    def _pack(self, values: Sequence[int], low: int, high: int, what: str) -> int:
        if len(values) != self.slots:
            raise InvalidRequest(f"expected {self.slots} {what}s, got {len(values)}")
        packed = 0
        width = self.slot_bits
        # Highest slot first, so each step is one shift and one add.
        for j in range(self.slots - 1, -1, -1):
            v = _as_int(f"{what} {j}", values[j])
            if not low <= v <= high:
                raise InvalidRequest(f"{what} {j} is outside [{low}, {high}]")
            packed = (packed << width) + v
        return packed


def _bits_for(limit: int) -> int:
    """Smallest slot width whose balanced range [-2^(b-1), 2^(b-1)) holds +-limit."""
    return max(2, limit.bit_length() + 1)
