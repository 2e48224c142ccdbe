"""With the coordinator down, the analyst's client says so: which server, and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from headcount.client import Client
from headcount.errors import PeerUnavailable
from headcount.federation import InitOptions, init_federation


def test_a_coordinator_that_is_down_is_named_with_its_address(tmp_path: Path) -> None:
    cfg = init_federation(
        tmp_path / "fed", InitOptions(paillier_bits=1024, insecure_test_keys=True)
    )  # nothing is started
    with Client(cfg) as client, pytest.raises(PeerUnavailable) as caught:
        client.status()
    assert str(caught.value).startswith(f"coordinator at {cfg.coordinator.address}: ")
