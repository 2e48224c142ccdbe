"""Fixtures for the linkage tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from headcount.linkage.dice import score_pairs
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, InputSpec, LinkageSchema


@pytest.fixture(autouse=True, scope="session")
def _compiled() -> Iterator[None]:
    # The kernel is compiled by numba on first use (or loaded from its cache):
    # do that here, not inside a hypothesis example with a deadline.
    ones = np.ones((4, 8), dtype=np.uint8)
    score_pairs(ones, ones, 0.5)
    yield


@pytest.fixture
def intl_schema() -> LinkageSchema:
    """The default schema reading the non-UK profile's files
    (`headcount.tools.intl_profile`): names in given_name and surname, the
    address over three columns, any country's postcodes."""
    return dataclasses.replace(
        DEFAULT_LINKAGE_SCHEMA,
        input=InputSpec(
            columns=(
                ("first_name", ("given_name",)),
                ("last_name", ("surname",)),
                ("address", ("street_number", "address_1", "address_2")),
            ),
            postcodes="any",
        ),
    )
