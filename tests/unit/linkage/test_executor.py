"""Tests for headcount.linkage.executor: blocks, specs, and Dask against the local path.

The Dask tests run a real two-worker `LocalCluster` (separate processes, as a
deployment would) once for the module, and hold every result to the local
executor's, array for array.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount import linkfiles
from headcount.cli import cli
from headcount.errors import InvalidRequest, PeerUnavailable
from headcount.linkage.dask_executor import DaskExecutor
from headcount.linkage.dice import Candidates, score_pairs
from headcount.linkage.engine import link_parties
from headcount.linkage.executor import (
    BlockedJob,
    CompareTask,
    LocalExecutor,
    dask_address,
    executor_from_spec,
    merge_candidates,
    plan_compare,
)
from headcount.synth import generate_population

distributed = pytest.importorskip("distributed", reason="needs the dask extra")

WIDTH_BYTES = 128  # 1024-bit CLKs, the default schema's width
THRESHOLD = 0.8


@pytest.fixture(autouse=True, scope="module")
def _compiled() -> Iterator[None]:
    # Compile (or load) the numba kernel once here, not inside a hypothesis
    # example with a deadline.
    ones = np.ones((4, 8), dtype=np.uint8)
    score_pairs(ones, ones, 0.5)
    yield


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """Address of a two-worker Dask cluster, each worker its own process."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        # No dashboard, and the scheduler's remaining HTTP server on a free
        # loopback port: with dashboard_address=None it would still take
        # 8787, and when another process holds that port tornado leaks the
        # socket of its failed bind, which surfaces later as a ResourceWarning.
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _planted_clks(seed: int, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Random CLKs per party where most records reappear, lightly noised, elsewhere.

    Random filters score about 0.5 against each other, so without planted
    copies nothing would pass the threshold. Some copies are exact, so some
    pairs tie on score and the (score, left, right) tie-break is exercised.
    """
    rng = np.random.default_rng(seed)
    people = np.packbits(rng.random((max(sizes.values()) * 2, WIDTH_BYTES * 8)) < 0.3, axis=1)
    out = {}
    for party, n in sizes.items():
        chosen = people[rng.choice(len(people), size=n, replace=False)]
        flips = rng.random((n, WIDTH_BYTES * 8)) < rng.choice([0.0, 0.01, 0.04], size=(n, 1))
        out[party] = chosen ^ np.packbits(flips, axis=1)
    return out


def _assert_same(a: Candidates, b: Candidates) -> None:
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.right, b.right)
    np.testing.assert_array_equal(a.score, b.score)


@pytest.fixture(scope="module")
def parties() -> dict[str, np.ndarray]:
    return _planted_clks(7, {"health": 900, "education": 1100, "justice": 600})


# -- blocks and merging, in process ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_left=st.integers(0, 60),
    n_right=st.integers(0, 60),
    block_rows=st.integers(1, 70),
)
def test_blocks_merge_to_the_whole_pair(
    seed: int, n_left: int, n_right: int, block_rows: int
) -> None:
    clks = _planted_clks(seed, {"left": n_left, "right": n_right})
    whole = score_pairs(clks["left"], clks["right"], THRESHOLD)
    tasks = plan_compare(clks["left"], clks["right"], THRESHOLD, block_rows)
    merged = merge_candidates(LocalExecutor(block_rows=block_rows).map_compare(tasks))
    _assert_same(merged, whole)


def test_plan_covers_left_rows_in_order_without_copying() -> None:
    left = np.zeros((10, 4), dtype=np.uint8)
    right = np.zeros((3, 4), dtype=np.uint8)
    tasks = plan_compare(left, right, 0.5, 4)
    assert [(t.left_start, len(t.left)) for t in tasks] == [(0, 4), (4, 4), (8, 2)]
    assert all(np.shares_memory(t.left, left) and t.right is right for t in tasks)
    # One task for a whole pair, and one even when the left side is empty.
    assert len(plan_compare(left, right, 0.5, None)) == 1
    assert len(plan_compare(left[:0], right, 0.5, 4)) == 1


@pytest.mark.parametrize(
    ("left", "right", "start", "threshold", "message"),
    [
        (np.zeros((2, 4), np.uint8), np.zeros((2, 5), np.uint8), 0, 0.8, "widths differ"),
        (np.zeros((2, 4), np.int64), np.zeros((2, 4), np.uint8), 0, 0.8, "2-D uint8"),
        (np.zeros((2, 4), np.uint8), np.zeros((2, 4), np.uint8), -1, 0.8, "left_start"),
        (np.zeros((2, 4), np.uint8), np.zeros((2, 4), np.uint8), 0, 1.5, "threshold"),
    ],
)
def test_a_bad_task_cannot_exist(
    left: np.ndarray, right: np.ndarray, start: int, threshold: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CompareTask(left, right, start, threshold)


def test_local_blocks_change_nothing(parties: dict[str, np.ndarray]) -> None:
    whole = link_parties(parties, THRESHOLD)
    assert link_parties(parties, THRESHOLD, executor=LocalExecutor(block_rows=64)) == whole
    assert sum(whole.candidates.values()) > 500  # the planted copies were found


# -- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("dask://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("dask://sched.example.org:8786", "tcp://sched.example.org:8786"),
        ("dask://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_dask_specs_name_a_tcp_address(spec: str, address: str) -> None:
    assert dask_address(spec) == address


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "Local",
        "dask",
        "dask://",
        "dask://host",  # no port
        "dask://host:0",
        "dask://host:65536",
        "dask://host:port",
        "dask://:8786",
        "dask://user@host:8786",
        "dask://host:8786/path",
        "dask://host:8786?x=1",
        "dask://ho\tst:8786",  # urlsplit would silently drop the tab
        "dask://[nonsense]:8786",
        "tcp://host:8786",
        " dask://host:8786",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(InvalidRequest, match="local' or 'dask://HOST:PORT'"):
        executor_from_spec(spec)


def test_local_spec() -> None:
    executor = executor_from_spec("local")
    assert isinstance(executor, LocalExecutor) and executor.block_rows is None


def test_an_unreachable_scheduler_fails_quickly() -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(PeerUnavailable, match=f"tcp://127.0.0.1:{port}"):
        executor_from_spec(f"dask://127.0.0.1:{port}", connect_timeout_s=0.5)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_cluster_without_workers_is_unavailable() -> None:
    with distributed.LocalCluster(
        n_workers=0,
        processes=False,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
    ) as empty:
        clks = _planted_clks(5, {"a": 10, "b": 10})
        started = time.monotonic()
        with (
            DaskExecutor(empty.scheduler_address, connect_timeout_s=0.5) as executor,
            pytest.raises(PeerUnavailable, match=empty.scheduler_address),
        ):
            link_parties(clks, THRESHOLD, executor=executor)
        assert time.monotonic() - started < 5


# -- blocked jobs split by bands ---------------------------------------------------------------

BLOCKING_KEY = bytes(range(32))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 16), max_size=5),
)
def test_band_ranges_merge_to_the_whole_job(seed: int, cuts: list[int]) -> None:
    """However the bands are cut, merging each range's pairs gives the whole job."""
    clks = _planted_clks(seed, {"a": 80, "b": 70, "c": 40})
    job = BlockedJob(
        (clks["a"], clks["b"], clks["c"]),
        ((0, 1, THRESHOLD), (0, 2, 0.7), (1, 2, THRESHOLD)),
        BLOCKING_KEY,
        16,
        8,
    )
    whole = job.run()
    edges = sorted({0, 16, *cuts})
    parts = [job.run((first, stop)) for first, stop in itertools.pairwise(edges)]
    for k, expected in enumerate(whole):
        _assert_same(merge_candidates([part[k] for part in parts]), expected)
    # Ranges do not overlap: no pair is reported by two of them.
    for k in range(len(whole)):
        assert sum(len(part[k]) for part in parts) == len(whole[k])
    assert len(whole[0]) > 0


def test_a_blocked_job_checks_its_input_when_made() -> None:
    a = np.zeros((3, 16), np.uint8)
    with pytest.raises(ValueError, match="out of range"):
        BlockedJob((a,), ((0, 1, THRESHOLD),), BLOCKING_KEY, 8, 8)
    with pytest.raises(ValueError, match="widths differ"):
        BlockedJob((a, np.zeros((3, 8), np.uint8)), ((0, 1, THRESHOLD),), BLOCKING_KEY, 8, 8)
    with pytest.raises(ValueError, match="seed_key"):
        BlockedJob((a, a), ((0, 1, THRESHOLD),), b"short", 8, 8)
    with pytest.raises(ValueError, match="bands"):
        BlockedJob((a, a), ((0, 1, THRESHOLD),), BLOCKING_KEY, 0, 8)
    job = BlockedJob((a, a), ((0, 1, THRESHOLD),), BLOCKING_KEY, 8, 8)
    with pytest.raises(ValueError, match="band_range"):
        job.run((4, 9))


# -- Dask against local -----------------------------------------------------------------------


@pytest.mark.slow
def test_dask_blocked_links_exactly_as_local(
    scheduler: str, parties: dict[str, np.ndarray]
) -> None:
    """Every pair LSH-blocked (as at national volumes), its bands spread over
    both workers: the same links as the local executor."""
    blocked = {"min_blocked_pairs": 0, "blocking_key": BLOCKING_KEY}
    local = link_parties(parties, THRESHOLD, **blocked)
    assert all(local.blocked.values())
    with DaskExecutor(scheduler) as executor:
        remote = link_parties(parties, THRESHOLD, executor=executor, **blocked)
        assert executor.map_blocked(BlockedJob((), (), BLOCKING_KEY, 4, 8)) == []
    assert remote == local
    assert remote.candidates == local.candidates and sum(remote.candidates.values()) > 0


@pytest.mark.slow
def test_dask_links_exactly_as_local(scheduler: str, parties: dict[str, np.ndarray]) -> None:
    local = link_parties(parties, THRESHOLD)
    # Small blocks, so every pair is spread over many tasks on both workers.
    with DaskExecutor(scheduler, block_rows=97) as executor:
        remote = link_parties(parties, THRESHOLD, executor=executor)
    assert remote == local


@pytest.mark.slow
def test_dask_candidates_equal_the_kernel_array_for_array(
    scheduler: str, parties: dict[str, np.ndarray]
) -> None:
    left, right = parties["education"], parties["health"]
    whole = score_pairs(left, right, THRESHOLD)
    with DaskExecutor(scheduler, block_rows=128) as executor:
        tasks = plan_compare(left, right, THRESHOLD, executor.block_rows)
        results = executor.map_compare(tasks)
        assert executor.map_compare([]) == []
    assert len(results) == len(tasks) == 9
    _assert_same(merge_candidates(results), whole)
    # Each block came back with global left indices inside its own rows.
    for task, found in zip(tasks, results, strict=True):
        assert np.all((found.left >= task.left_start) & (found.left < task.left_start + 128))


@pytest.mark.slow
def test_dask_handles_empty_and_lone_parties(scheduler: str) -> None:
    clks = _planted_clks(3, {"a": 50, "b": 1, "c": 0})
    with DaskExecutor(scheduler, block_rows=16) as executor:
        assert link_parties(clks, THRESHOLD, executor=executor) == link_parties(clks, THRESHOLD)
        only = {"a": clks["a"]}
        assert link_parties(only, THRESHOLD, executor=executor) == link_parties(only, THRESHOLD)


@pytest.mark.slow
def test_dask_checks_input_before_sending(scheduler: str) -> None:
    clks = {"a": np.zeros((4, 16), np.uint8), "b": np.zeros((4, 8), np.uint8)}
    with (
        DaskExecutor(scheduler) as executor,
        pytest.raises(ValueError, match="widths differ"),
    ):
        link_parties(clks, THRESHOLD, executor=executor)


def _keys_held(client: Any, expected: int) -> int:
    """Keys held on the cluster's workers, polled until ``expected`` or 5 s pass.

    Scattering and releasing are asynchronous on the scheduler's side, so it
    is given a moment to catch up.
    """
    deadline = time.monotonic() + 5
    while True:
        held = sum(len(keys) for keys in client.has_what().values())
        if held == expected or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


@pytest.mark.slow
def test_dask_leaves_no_data_on_the_cluster(scheduler: str, parties: dict[str, np.ndarray]) -> None:
    with distributed.Client(scheduler, set_as_default=False) as client:
        # The probe sees data that is held, so the zero below means released.
        kept = client.scatter(parties["health"])
        assert _keys_held(client, 1) == 1
        del kept
        assert _keys_held(client, 0) == 0
        with DaskExecutor(scheduler, block_rows=200) as executor:
            link_parties(parties, THRESHOLD, executor=executor)
            assert _keys_held(client, 0) == 0
            # Blocked: every party's CLKs went to both workers, and are gone.
            link_parties(
                parties,
                THRESHOLD,
                executor=executor,
                min_blocked_pairs=0,
                blocking_key=BLOCKING_KEY,
            )
        assert _keys_held(client, 0) == 0


# -- the command line -------------------------------------------------------------------------


class _FixedSecretOs:
    """``os`` with a constant ``urandom``: link-files draws a fresh secret per run,
    and two runs can only write the same file when they encode with one key."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def urandom(n: int) -> bytes:
        return bytes(range(n))


@pytest.mark.slow
def test_link_files_writes_the_same_pairs_on_dask(
    scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_population(800, 11, tmp_path)
    monkeypatch.setattr(linkfiles, "os", _FixedSecretOs())
    files = [str(tmp_path / f"{d}.csv") for d in ("education", "health", "justice")]
    written = {}
    for name, spec in (("local", "local"), ("dask", scheduler.replace("tcp://", "dask://"))):
        out = tmp_path / f"pairs-{name}.csv"
        result = CliRunner().invoke(
            cli, ["link-files", *files, "--out", str(out), "--executor", spec]
        )
        assert result.exit_code == 0, result.output
        written[name] = out.read_bytes()
    assert written["dask"] == written["local"]
    assert written["local"].count(b"\n") > 100  # a header and many linked pairs


def test_link_files_refuses_a_bad_executor_before_reading(tmp_path: Path) -> None:
    out = tmp_path / "pairs.csv"
    invalid = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    for path in invalid:
        Path(path).write_text("not,a,valid,file\n")
    result = CliRunner().invoke(
        cli, ["link-files", *invalid, "--out", str(out), "--executor", "dask://nowhere"]
    )
    assert result.exit_code == 1
    assert "dask://HOST:PORT" in result.output
    assert not out.exists()
