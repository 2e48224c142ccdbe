"""Hostile input in every file the system reads: random bytes, truncations and
mutations of valid files.

Department files, the federation config, the linkage schema, query specs and
audit events each fail with the project's own error, naming the problem,
never with a raw Python exception (a decode error, a KeyError, a traceback).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headcount import config
from headcount.domain.audit import AuditEvent
from headcount.domain.queryfile import load_query_spec
from headcount.errors import HeadcountError
from headcount.federation import InitOptions, init_federation
from headcount.linkage.schema_file import DEFAULT_SCHEMA_PATH, load_schema
from headcount.synth import generate_population
from party_node.data import load_department_file

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DOCS_QUERY = Path(__file__).resolve().parents[2] / "docs" / "queries"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One valid file of each kind, to mutate."""
    root = tmp_path_factory.mktemp("files")
    init_federation(root / "fed", InitOptions(paillier_bits=1024, insecure_test_keys=True))
    generate_population(200, 3, root / "data")
    return {
        "department": (root / "data" / "immigration.csv").read_bytes(),
        "config": (root / "fed" / "federation.toml").read_bytes(),
        "schema": DEFAULT_SCHEMA_PATH.read_bytes(),
        "query": (DOCS_QUERY / "children-with-adult-in-custody.yaml").read_bytes(),
    }


def _mutate(data: bytes, cut: float, flips: list[tuple[float, int]], insert: bytes) -> bytes:
    """Truncate at a fraction, flip some bytes, splice in some others."""
    out = bytearray(data[: int(len(data) * cut)] if cut < 1 else data)
    for where, value in flips:
        if out:
            out[int(where * (len(out) - 1))] = value
    at = len(out) // 2
    return bytes(out[:at]) + insert + bytes(out[at:])


_mutations = st.tuples(
    st.sampled_from([1.0, 0.99, 0.7, 0.3, 0.05]),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
    st.one_of(
        st.just(b""),
        st.binary(max_size=40),
        st.sampled_from([b"\xff\xfe", b'"', b",,,,", b"\n\n", b"[", b"= =", b"\x00"]),
    ),
)


def _read_clean(read: Callable[[Path], object], path: Path) -> None:
    """``read`` either accepts the file or raises a HeadcountError: nothing else."""
    try:
        read(path)
    except HeadcountError as exc:
        assert str(exc), "an error must say what is wrong"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@SETTINGS
@given(mutation=_mutations)
def test_department_files(samples: dict[str, bytes], tmp_path: Path, mutation: tuple) -> None:  # type: ignore[type-arg]
    path = _write(tmp_path, "immigration.csv", _mutate(samples["department"], *mutation))
    _read_clean(lambda p: load_department_file(p, "immigration"), path)


@SETTINGS
@given(data=st.binary(max_size=600))
def test_department_files_of_random_bytes(tmp_path: Path, data: bytes) -> None:
    _read_clean(lambda p: load_department_file(p, "immigration"), _write(tmp_path, "imm.csv", data))


@SETTINGS
@given(mutation=_mutations)
def test_federation_configs(
    samples: dict[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    mutation: tuple,  # type: ignore[type-arg]
) -> None:
    # Next to a real federation's certificates, so only the file's text varies.
    root = tmp_path_factory.mktemp("cfg")
    fed = root / "fed"
    init_federation(fed, InitOptions(paillier_bits=1024, insecure_test_keys=True))
    path = fed / "federation.toml"
    path.write_bytes(_mutate(samples["config"], *mutation))
    _read_clean(config.load, path)
    shutil.rmtree(root)


@SETTINGS
@given(mutation=_mutations)
def test_linkage_schemas(samples: dict[str, bytes], tmp_path: Path, mutation: tuple) -> None:  # type: ignore[type-arg]
    path = _write(tmp_path, "schema.toml", _mutate(samples["schema"], *mutation))
    _read_clean(load_schema, path)


@SETTINGS
@given(mutation=_mutations)
def test_query_specs(samples: dict[str, bytes], tmp_path: Path, mutation: tuple) -> None:  # type: ignore[type-arg]
    path = _write(tmp_path, "query.yaml", _mutate(samples["query"], *mutation))
    _read_clean(load_query_spec, path)


@SETTINGS
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(repr)))
def test_audit_events(text: str) -> None:
    try:
        AuditEvent.from_json(text)
    except HeadcountError as exc:
        assert str(exc)


def test_each_reader_rejects_a_file_cut_in_half(samples: dict[str, bytes], tmp_path: Path) -> None:
    """The fuzz tests above accept 'read or refuse'; this pins that a damaged
    file is in fact refused, by each reader, with the project's error."""
    readers: dict[str, tuple[str, Callable[[Path], object]]] = {
        "department": ("immigration.csv", lambda p: load_department_file(p, "immigration")),
        "schema": ("schema.toml", load_schema),
        "query": ("query.yaml", load_query_spec),
    }
    for kind, (name, read) in readers.items():
        data = samples[kind]
        cut = data[: len(data) // 2] + b"\n\xff\xfe broken"
        with pytest.raises(HeadcountError):
            read(_write(tmp_path, name, cut))
