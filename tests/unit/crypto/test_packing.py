"""Slot packing: sums unpack to per-slot sums, and overflow is refused up front."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.crypto import paillier
from headcount.crypto.packing import SAFETY_MARGIN_BITS, SlotLayout
from headcount.errors import InvalidRequest

PUB, PRIV = paillier.generate_keypair(1024)
N_BITS = PUB.n.bit_length()


@st.composite
def layouts_and_data(
    draw: st.DrawFn,
) -> tuple[SlotLayout, list[list[int]], list[int]]:
    """A fitted layout, up to max_summands rows within bounds, and one noise vector."""
    slots = draw(st.integers(1, 12))
    max_value = draw(st.integers(0, 300))
    max_summands = draw(st.integers(1, 40))
    noise_bound = draw(st.integers(0, 10_000))
    layout = SlotLayout.fit(
        slots,
        n_bits=N_BITS,
        max_summands=max_summands,
        max_value=max_value,
        noise_bound=noise_bound,
    )
    row = st.lists(st.integers(0, max_value), min_size=slots, max_size=slots)
    rows = draw(st.lists(row, min_size=0, max_size=max_summands))
    noise = draw(st.lists(st.integers(-noise_bound, noise_bound), min_size=slots, max_size=slots))
    return layout, rows, noise


def _column_sums(rows: list[list[int]], noise: list[int]) -> list[int]:
    return (
        [sum(col) + z for col, z in zip(zip(*rows, strict=True), noise, strict=True)]
        if rows
        else noise
    )


@settings(max_examples=200, deadline=None)
@given(layouts_and_data())
def test_sum_then_unpack_gives_per_slot_sums_with_signed_noise(
    case: tuple[SlotLayout, list[list[int]], list[int]],
) -> None:
    layout, rows, noise = case
    layout.check_summands(len(rows))
    total = sum(layout.pack_rows(rows)) + layout.pack_noise(noise)
    assert layout.unpack(total) == _column_sums(rows, noise)


@settings(max_examples=12, deadline=None)
@given(layouts_and_data())
def test_homomorphic_sum_of_packed_records_unpacks(
    case: tuple[SlotLayout, list[list[int]], list[int]],
) -> None:
    layout, rows, noise = case
    summed = paillier.add_all(PUB, paillier.encrypt(PUB, layout.pack_rows(rows)))
    noisy = paillier.add_plain(PUB, summed, layout.pack_noise(noise))
    assert layout.unpack(paillier.decrypt(PRIV, noisy)) == _column_sums(rows, noise)


def test_widest_layout_still_decrypts_as_signed() -> None:
    # The largest layout a key allows, every slot at its extreme (top slot
    # negative), must survive encryption and signed decryption.
    slots = SlotLayout.capacity(N_BITS, 20)
    layout = SlotLayout(slots, 20, n_bits=N_BITS, max_summands=1000, max_value=1, noise_bound=1000)
    for noise in ([1000] * slots, [-1000] * slots, [1000] * (slots - 1) + [-1000]):
        (c,) = paillier.encrypt(PUB, [layout.pack([1] * slots)])
        c = paillier.add_plain(PUB, c, layout.pack_noise(noise))
        assert layout.unpack(paillier.decrypt(PRIV, c)) == [1 + z for z in noise]


@settings(max_examples=100, deadline=None)
@given(layouts_and_data(), st.integers(1, 50))
def test_more_summands_than_declared_is_refused(
    case: tuple[SlotLayout, list[list[int]], list[int]], extra: int
) -> None:
    layout, _, _ = case
    with pytest.raises(InvalidRequest, match="max_summands"):
        layout.check_summands(layout.max_summands + extra)


@settings(max_examples=100, deadline=None)
@given(layouts_and_data(), st.integers(1, 1000))
def test_values_and_noise_beyond_bounds_are_refused_at_pack_time(
    case: tuple[SlotLayout, list[list[int]], list[int]], excess: int
) -> None:
    layout, _, noise = case
    slot = len(noise) - 1
    too_big = [0] * layout.slots
    too_big[slot] = layout.max_value + excess
    with pytest.raises(InvalidRequest, match=f"value {slot} is outside"):
        layout.pack(too_big)
    with pytest.raises(InvalidRequest):
        layout.pack([-excess] + [0] * (layout.slots - 1))
    loud = list(noise)
    loud[slot] = layout.noise_bound + excess
    with pytest.raises(InvalidRequest, match=f"noise {slot} is outside"):
        layout.pack_noise(loud)
    loud[slot] = -layout.noise_bound - excess
    with pytest.raises(InvalidRequest):
        layout.pack_noise(loud)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 10_000), st.integers(0, 10_000))
def test_layout_too_narrow_for_its_bounds_is_refused(
    max_value: int, max_summands: int, noise_bound: int
) -> None:
    fitted = SlotLayout.fit(
        2, n_bits=N_BITS, max_summands=max_summands, max_value=max_value, noise_bound=noise_bound
    )
    # Below 2 bits the width itself is refused; above, the bounds are.
    with pytest.raises(InvalidRequest, match=r"needs slot_bits|slot_bits must be"):
        SlotLayout(
            2,
            fitted.slot_bits - 1,
            n_bits=N_BITS,
            max_summands=max_summands,
            max_value=max_value,
            noise_bound=noise_bound,
        )


def test_fitted_slots_are_just_wide_enough() -> None:
    # 1 indicator x 255 records needs 8 bits of magnitude plus a sign bit.
    assert SlotLayout.fit(3, n_bits=N_BITS, max_summands=255).slot_bits == 9
    assert SlotLayout.fit(3, n_bits=N_BITS, max_summands=256).slot_bits == 10
    assert SlotLayout.fit(1, n_bits=N_BITS, max_summands=1, max_value=0).slot_bits == 2


def test_layout_larger_than_the_key_is_refused() -> None:
    capacity = SlotLayout.capacity(N_BITS, 32)
    assert capacity == (N_BITS - SAFETY_MARGIN_BITS) // 32
    SlotLayout(capacity, 32, n_bits=N_BITS, max_summands=1000)
    with pytest.raises(InvalidRequest, match="bits"):
        SlotLayout(capacity + 1, 32, n_bits=N_BITS, max_summands=1000)
    with pytest.raises(InvalidRequest):
        SlotLayout.fit(1, n_bits=N_BITS, max_summands=2**N_BITS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SlotLayout(0, 8, n_bits=N_BITS, max_summands=1),
        lambda: SlotLayout(1, 1, n_bits=N_BITS, max_summands=1),
        lambda: SlotLayout(1, 8, n_bits=N_BITS, max_summands=0),
        lambda: SlotLayout(1, 8, n_bits=N_BITS, max_summands=1, max_value=-1),
        lambda: SlotLayout(1, 8, n_bits=N_BITS, max_summands=1, noise_bound=-1),
        lambda: SlotLayout(1, 8, n_bits=N_BITS, max_summands=True),
        lambda: SlotLayout(1, 8.0, n_bits=N_BITS, max_summands=1),  # type: ignore[arg-type]
    ],
)
def test_bad_layout_fields_are_refused(make: Callable[[], SlotLayout]) -> None:
    with pytest.raises(InvalidRequest):
        make()


def test_pack_refuses_wrong_lengths_and_types() -> None:
    layout = SlotLayout.fit(3, n_bits=N_BITS, max_summands=10, noise_bound=5)
    for bad in ([1, 0], [1, 0, 0, 0], [1, 0, 0.5], [1, 0, True]):
        with pytest.raises(InvalidRequest):
            layout.pack(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        layout.pack_noise([0, 0])


def test_unpack_refuses_values_no_in_bounds_sum_can_take() -> None:
    layout = SlotLayout.fit(3, n_bits=N_BITS, max_summands=10, noise_bound=5)
    width = layout.slot_bits
    # Ten summands and noise up to 5 allow 15 per slot; sixteen records do not fit.
    over = layout.pack([1, 1, 1]) * 16
    with pytest.raises(InvalidRequest, match="slot 0"):
        layout.unpack(over)
    with pytest.raises(InvalidRequest, match="above the top slot"):
        layout.unpack(1 << (3 * width))
    with pytest.raises(InvalidRequest, match="slot 1"):
        layout.unpack(-6 << width)  # below -noise_bound
    assert layout.unpack(layout.pack_noise([-5, 5, -5])) == [-5, 5, -5]
