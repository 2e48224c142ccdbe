"""headcount link-files: the federation's engine on local files, checked against truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from headcount.cli import cli
from headcount.errors import InvalidInput, InvalidRequest
from headcount.linkage.normalise import normalise_date
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
from headcount.linkfiles import link_files
from headcount.synth import generate_population


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("linkfiles")
    generate_population(1500, 5, out)
    return out


def test_two_files_match_ground_truth(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.csv"
    result = CliRunner().invoke(
        cli,
        ["link-files", str(data / "education.csv"), str(data / "health.csv"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    pairs = pd.read_csv(out, dtype=str)
    assert list(pairs.columns) == ["id_a", "id_b", "score"]
    scores = pairs["score"].astype(float)
    # Exact match-key links may score below the Dice threshold (a moved
    # address, a nickname); the rest are CLK links at or above it.
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores >= DEFAULT_LINKAGE_SCHEMA.threshold).mean() >= 0.95
    truth = pd.read_csv(data / "ground_truth.csv", dtype=str, keep_default_na=False)
    true_pairs = {
        (e, h) for e, h in zip(truth.education_id, truth.health_id, strict=True) if e and h
    }
    found = set(zip(pairs.id_a, pairs.id_b, strict=True))
    precision = len(found & true_pairs) / len(found)
    recall = len(found & true_pairs) / len(true_pairs)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)


def test_three_files_name_their_parties(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.csv"
    summary = link_files(
        [data / "education.csv", data / "health.csv", data / "immigration.csv"], out, threshold=0.8
    )
    pairs = pd.read_csv(out, dtype=str)
    assert list(pairs.columns) == ["party_a", "id_a", "party_b", "id_b", "score"]
    assert set(pairs.party_a) | set(pairs.party_b) <= {"education", "health", "immigration"}
    assert summary.pairs_written == len(pairs) > 0
    # At most one record per party per cluster: no id is linked twice to one party.
    for party in ("education", "health", "immigration"):
        left = pairs[pairs.party_a == party][["id_a", "party_b"]]
        assert not left.duplicated().any()


def test_a_bad_file_writes_nothing(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,first_name\n1,Ann\n")
    out = tmp_path / "pairs.csv"
    with pytest.raises(InvalidInput, match="missing column"):
        link_files([data / "health.csv", bad], out, threshold=0.8)
    assert not out.exists()
    assert not (tmp_path / "pairs.csv.partial").exists()


def test_id_a_comes_from_the_first_file_named(data: Path, tmp_path: Path) -> None:
    """Named health first: id_a is a health id, although "education" sorts first."""
    out = tmp_path / "pairs.csv"
    link_files([data / "health.csv", data / "education.csv"], out, threshold=0.8, seed=7)
    pairs = pd.read_csv(out, dtype=str)
    health = set(pd.read_csv(data / "health.csv", dtype=str).record_id)
    education = set(pd.read_csv(data / "education.csv", dtype=str).record_id)
    assert len(pairs) > 0
    assert set(pairs.id_a) <= health and set(pairs.id_b) <= education
    # Three files: party_a is always the one named earlier on the command line.
    three = tmp_path / "three.csv"
    link_files(
        [data / "immigration.csv", data / "health.csv", data / "education.csv"],
        three,
        threshold=0.8,
        seed=7,
    )
    rank = {"immigration": 0, "health": 1, "education": 2}
    got = pd.read_csv(three, dtype=str)
    assert (got.party_a.map(rank) < got.party_b.map(rank)).all()


def test_a_seed_makes_the_run_repeatable(data: Path, tmp_path: Path) -> None:
    files = [data / "education.csv", data / "health.csv"]
    runs = []
    for name in ("a.csv", "b.csv"):
        link_files(files, tmp_path / name, threshold=0.8, seed=42)
        runs.append((tmp_path / name).read_bytes())
    assert runs[0] == runs[1]
    link_files(files, tmp_path / "c.csv", threshold=0.8, seed=43)
    # Another seed gives other keys: the same links (scores move only with
    # the keyed hashing), never a different file format.
    other = pd.read_csv(tmp_path / "c.csv", dtype=str)
    assert list(other.columns) == ["id_a", "id_b", "score"] and len(other) > 0


def test_the_output_directory_is_made_or_refused_before_any_work(
    data: Path, tmp_path: Path
) -> None:
    files = [data / "education.csv", data / "health.csv"]
    deep = tmp_path / "new" / "dir" / "pairs.csv"
    link_files(files, deep, threshold=0.8, seed=1)
    assert deep.exists()
    # A path through a regular file cannot become a directory: refused at once,
    # before the (bad) input is even read.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,first_name\n1,Ann\n")
    result = CliRunner().invoke(
        cli, ["link-files", str(bad), str(files[1]), "--out", str(blocker / "pairs.csv")]
    )
    assert result.exit_code != 0
    assert "output directory" in result.output and "Traceback" not in result.output
    assert "missing column" not in result.output
    with pytest.raises(InvalidRequest, match="is a directory"):
        link_files(files, tmp_path, threshold=0.8)


def _foreign(src: Path, dst: Path, date_style: str) -> None:
    """The synthetic file as a non-UK register writes it: other column names, no
    sex, 4-digit postcodes, another date style, and one impossible date."""
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    iso = [normalise_date(d) for d in frame.date_of_birth]  # UK files: day-first
    dates = pd.to_datetime(pd.Series(iso).replace("", None), format="%Y-%m-%d")
    out = pd.DataFrame(
        {
            "record_id": frame.record_id,
            "given_name": frame.first_name,
            "surname": frame.last_name,
            "dob": dates.dt.strftime(date_style).fillna(""),
            # One code per UK postcode, as a stand-in for any 4-digit system.
            "postcode": [
                f"{int.from_bytes(p.encode(), 'big') % 9000 + 1000}" if p else ""
                for p in frame.postcode
            ],
        }
    )
    out.loc[0, "dob"] = "19450493"
    out.to_csv(dst, index=False)


def test_a_non_uk_file_links_through_its_schema(data: Path, tmp_path: Path) -> None:
    """Renamed columns, no sex, 4-digit postcodes, month-first dates on one side
    and year/month/day on the other, an impossible date in each."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _foreign(data / "education.csv", a, "%m/%d/%Y")
    _foreign(data / "health.csv", b, "%Y/%m/%d")
    args = ["link-files", str(a), str(b), "--column", "first_name=given_name"]
    args += ["--column", "last_name=surname", "--column", "date_of_birth=dob"]
    args += ["--postcodes", "any", "--seed", "3"]
    out = tmp_path / "pairs.csv"
    refused = CliRunner().invoke(cli, [*args, "--out", str(out)])
    # Without --blank-invalid the impossible date refuses the file, naming
    # line and column and the accepted styles.
    assert refused.exit_code != 0 and not out.exists()
    assert "line 2, column 'dob'" in refused.output and "MM/DD/YYYY" in refused.output
    result = CliRunner().invoke(cli, [*args, "--blank-invalid", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "month-first" in result.output and "1 unreadable values blanked" in result.output
    assert "no column for: sex" in result.output
    truth = pd.read_csv(data / "ground_truth.csv", dtype=str, keep_default_na=False)
    true_pairs = {
        (e, h) for e, h in zip(truth.education_id, truth.health_id, strict=True) if e and h
    }
    pairs = pd.read_csv(out, dtype=str)
    found = set(zip(pairs.id_a, pairs.id_b, strict=True))
    precision = len(found & true_pairs) / len(found)
    recall = len(found & true_pairs) / len(true_pairs)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)
    # Match-keys still work without sex: the derived hierarchy found links.
    assert "match-keys: mk1" in result.output
    assert " 0 by match-key" not in result.output


def _with_schema_columns(src: Path, dst: Path, truth: pd.DataFrame, side: str) -> int:
    """The synthetic file in intl-example.toml's columns, with a reference number
    (the person's) on most records; the first 20 linked records of side "b" get
    names and day of birth no other field would forgive (the birth year stays, as
    the reference level keys on it). Returns how many were garbled."""
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    person = dict(zip(truth[f"{src.stem}_id"], truth.person_id, strict=True))
    street = frame.address.str.extract(r"^(\d+)\s+(.*)$")
    out = pd.DataFrame(
        {
            "record_id": frame.record_id,
            "given_name": frame.first_name,
            "surname": frame.last_name,
            "dob": frame.date_of_birth,
            "street_number": street[0].fillna(""),
            "address_1": street[1].fillna(frame.address),
            "address_2": "",
            "suburb": frame.local_authority,
            "postcode": frame.postcode.str.replace(" ", "").str[:4],
            "soc_sec_id": [person[r][1:] if i % 4 else "" for i, r in enumerate(frame.record_id)],
        }
    )
    garbled = 0
    if side == "b":
        for i in range(len(out)):
            if garbled == 20:
                break
            if out.loc[i, "soc_sec_id"]:
                born = normalise_date(out.loc[i, "dob"])[:4] or "1901"
                out.loc[i, ["given_name", "surname", "dob"]] = ["Zzyzx", "Qwxyz", born + "-01-01"]
                garbled += 1
    out.to_csv(dst, index=False)
    return garbled


def test_a_schema_names_the_columns_and_adds_fields(data: Path, tmp_path: Path) -> None:
    """schemas/intl-example.toml: address in three columns, a suburb, a reference
    number, no sex. Records whose names and date are wrong link by reference."""
    from headcount.linkage.schema_file import DEFAULT_SCHEMA_PATH, load_schema
    from headcount.linkfiles import read_options

    schema = load_schema(DEFAULT_SCHEMA_PATH.parent / "intl-example.toml")
    truth = pd.read_csv(data / "ground_truth.csv", dtype=str, keep_default_na=False)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _with_schema_columns(data / "education.csv", a, truth, "a")
    garbled = _with_schema_columns(data / "health.csv", b, truth, "b")
    out = tmp_path / "pairs.csv"
    summary = link_files(
        [a, b],
        out,
        schema=schema,
        seed=5,
        options=read_options(schema, blank_invalid=True),
    )
    assert summary.clk_fields[-3:] == ("address", "locality", "reference")
    names = [k.name for k in summary.match_keys]
    assert names[0] == "mkref" and "mkaddr" in names and "mkloc" in names
    assert summary.reports["a"].absent == ("sex",)
    true_pairs = {
        (e, h) for e, h in zip(truth.education_id, truth.health_id, strict=True) if e and h
    }
    pairs = pd.read_csv(out, dtype=str)
    found = set(zip(pairs.id_a, pairs.id_b, strict=True))
    precision = len(found & true_pairs) / len(found)
    recall = len(found & true_pairs) / len(true_pairs)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)
    # The garbled records share little but the reference with their true
    # partner; where the partner has one too, the reference level links them.
    b_frame = pd.read_csv(b, dtype=str, keep_default_na=False)
    a_frame = pd.read_csv(a, dtype=str, keep_default_na=False)
    wrong = set(b_frame.record_id[b_frame.given_name == "Zzyzx"])
    assert len(wrong) == garbled == 20
    with_reference = set(a_frame.record_id[a_frame.soc_sec_id != ""])
    true_wrong = {(e, h) for e, h in true_pairs if h in wrong and e in with_reference}
    assert true_wrong and true_wrong <= found
    # Control: read without the reference column, they are lost.
    control = tmp_path / "control.csv"
    link_files(
        [a, b],
        control,
        schema=schema,
        seed=5,
        options=read_options(schema, blank_invalid=True, columns={"reference": "none"}),
    )
    got = pd.read_csv(control, dtype=str)
    assert not true_wrong & set(zip(got.id_a, got.id_b, strict=True))


def _with_duplicates(src: Path, dst: Path) -> set[tuple[str, str]]:
    """The file with a second, altered record for every fifth person (a typo in
    the first name, the date in another style, the postcode blank); returns the
    true duplicate pairs."""
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(11)
    extra = []
    truth = set()
    for i in range(0, len(frame), 5):
        row = frame.iloc[i].copy()
        name = row.first_name
        if len(name) > 3:
            k = int(rng.integers(1, len(name) - 1))
            name = name[:k] + name[k + 1] + name[k] + name[k + 2 :]
        row.first_name = name
        iso = normalise_date(row.date_of_birth)
        row.date_of_birth = f"{iso[8:10]}.{iso[5:7]}.{iso[:4]}" if iso else ""
        row.postcode = ""
        row.record_id = f"DUP-{i:06d}"
        extra.append(row)
        truth.add((frame.record_id.iloc[i], row.record_id))
    pd.concat([frame, pd.DataFrame(extra)]).to_csv(dst, index=False)
    return truth


def test_dedup_finds_a_files_own_duplicates(data: Path, tmp_path: Path) -> None:
    """One file holding several records of some people (siblings and twins too):
    --dedup finds the duplicates without joining relatives."""
    register = tmp_path / "register.csv"
    truth = _with_duplicates(data / "health.csv", register)
    out = tmp_path / "dups" / "pairs.csv"
    result = CliRunner().invoke(
        cli, ["link-files", str(register), "--dedup", "--seed", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "with duplicates" in result.output and "merges refused" in result.output
    pairs = pd.read_csv(out, dtype=str)
    assert list(pairs.columns) == ["id_a", "id_b", "score"]
    found = set(zip(pairs.id_a, pairs.id_b, strict=True))
    precision = len(found & truth) / len(found)
    recall = len(found & truth) / len(truth)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)
    # Two files to --dedup, or one file without it, are refused before any work.
    two = CliRunner().invoke(
        cli, ["link-files", str(register), str(register), "--dedup", "--out", str(out)]
    )
    assert two.exit_code != 0 and "exactly one file" in two.output
    one = CliRunner().invoke(cli, ["link-files", str(register), "--out", str(out)])
    assert one.exit_code != 0 and "--dedup" in one.output


def test_an_unreadable_date_keeps_its_readable_parts(tmp_path: Path) -> None:
    """Under blank_invalid a date like 1996-09-51 keeps its year and month (for
    the CLK and the birth-year keys), and one with a letter misread for a
    digit is read whole; without blank_invalid the file is refused."""
    from headcount.linkage.clk import encode_clks
    from headcount.linkage.dedup import _dice
    from headcount.linkfiles import read_options
    from party_node.data import read_identity_file

    path = tmp_path / "f.csv"
    path.write_text(
        "record_id,first_name,last_name,date_of_birth\n"
        "1,ann,lee,1996-09-21\n"
        "2,ann,lee,1996-09-51\n"
        "3,ann,lee,1996-O9-21\n"
        "4,ann,lee,\n",
        encoding="utf-8",
    )
    read = read_identity_file(path, read_options(DEFAULT_LINKAGE_SCHEMA, blank_invalid=True))
    people = read.identities
    assert people[1].date_of_birth == "" and people[1].birth_partial == "1996-09-00"
    assert people[2].date_of_birth == "1996-09-21" and people[2].birth_partial == ""
    assert read.report is not None and read.report.blanked == {"date_of_birth": 2}
    clks = encode_clks(people, bytes(32))
    bits = np.ascontiguousarray(clks).view(np.uint64)
    counts = np.bitwise_count(bits).sum(axis=1)
    partial, blank = _dice(bits, counts, [0], [1])[0, 0], _dice(bits, counts, [0], [3])[0, 0]
    assert partial > blank + 0.05, (partial, blank)
    with pytest.raises(InvalidInput):
        read_identity_file(path, read_options(DEFAULT_LINKAGE_SCHEMA))
