"""Checks of the identifiers a node is handed, and names of what it stores."""

from __future__ import annotations

from headcount.errors import InvalidRequest


def flip_seed_name(epoch_id: str) -> str:
    """The secret's name under which an epoch's bit-flip seed is stored."""
    return f"epoch-flip-seed/{epoch_id}"


def check_id(what: str, value: str) -> None:
    """Refuse (InvalidRequest) an id that is not 1-64 letters, digits, '-' or '_'."""
    if not (1 <= len(value) <= 64) or not all(ch.isalnum() or ch in "-_" for ch in value):
        raise InvalidRequest(f"{what} must be 1-64 letters, digits, '-' or '_'")
