"""The command line: help that helps, and errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from cli_parse import parse_command
from click.testing import CliRunner

from headcount.cli import cli

COMMANDS = [
    [],
    ["federation"],
    ["federation", "init"],
    ["synth"],
    ["node"],
    ["node", "serve"],
    ["node", "check"],
    ["coordinator", "serve"],
    ["health"],
    ["ceremony"],
    ["link"],
    ["query"],
    ["status"],
    ["audit"],
    ["audit", "show"],
    ["audit", "verify"],
    ["attack"],
    ["project"],
    ["project", "propose"],
    ["project", "approve"],
    ["project", "revoke"],
    ["project", "list"],
    ["link-files"],
    ["demo"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "headcount")
def test_help_explains_each_command(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 4


def test_federation_init_then_synth_then_check(tmp_path: Path) -> None:
    runner = CliRunner()
    fed = tmp_path / "fed"
    result = runner.invoke(cli, ["federation", "init", str(fed), "--paillier-bits", "1024"])
    assert result.exit_code == 0, result.output
    assert (fed / "federation.toml").is_file()
    result = runner.invoke(
        cli, ["synth", "--people", "300", "--seed", "3", "--out", str(fed / "data")]
    )
    assert result.exit_code == 0, result.output
    assert "education" in result.output
    result = runner.invoke(
        cli, ["node", "check", "--config", str(fed / "federation.toml"), "--party", "health"]
    )
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    # Break the file: the steward sees the offending value; exit code 1.
    path = fed / "data" / "health.csv"
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[4] = "Martian"
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        cli, ["node", "check", "--config", str(fed / "federation.toml"), "--party", "health"]
    )
    assert result.exit_code == 1
    assert "line 2, column 'sex'" in result.output and "Martian" in result.output
    # As the node reads with blank_invalid = true: blanked and counted.
    result = runner.invoke(
        cli,
        [
            "node",
            "check",
            "--config",
            str(fed / "federation.toml"),
            "--party",
            "health",
            "--blank-invalid",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 unreadable values blanked in column 'sex'" in result.output
    assert "Martian" not in result.output
    assert "dates read day-first" in result.output


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "federation init" in result.output


def test_bad_filter_syntax_is_explained() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "query",
            "--analyst",
            "a",
            "--population",
            "education",
            "--group-by",
            "immigration.immigration_status",
            "--purpose",
            "a good long purpose",
            "--filter",
            "fsm",
        ],
    )
    assert result.exit_code != 0
    assert "party.attribute=value" in result.output


def test_attack_list_names_every_attack() -> None:
    from headcount.attacks import attack_names

    result = CliRunner().invoke(cli, ["attack", "--list"])
    assert result.exit_code == 0
    assert result.output.split() == attack_names()


def test_the_command_table_matches_each_commands_own_help() -> None:
    """`headcount --help` lists commands from a table so as not to import them;
    the table must say what each command's own help says."""
    from headcount.cli import COMMANDS, SHORT_HELP_CHARS, load_command

    for name, (_, _, short) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert short == command.get_short_help_str(limit=SHORT_HELP_CHARS), name
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert all(name in listed for name in COMMANDS)
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2


def test_help_loads_no_heavy_library_and_is_fast() -> None:
    """`headcount --help` in a fresh interpreter imports neither the linkage
    kernel (numba, pandas) nor OpenDP nor gRPC's stubs for the roles; its
    import time is measured (the 0.3 s goal is for the whole command)."""
    import subprocess
    import sys

    code = (
        "import sys, time; t = time.perf_counter();"
        "from headcount.cli import cli;"
        "import contextlib, io\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):"
        " cli(['--help'])\n"
        "print(time.perf_counter() - t);"
        "print(sorted(m for m in ('numba', 'pandas', 'opendp', 'numpy', 'coordinator',"
        " 'party_node', 'headcount.linkage', 'headcount.config') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[1] == "[]", out
    assert float(out[0]) < 1.0  # generous: CI machines are shared


def test_a_log_level_that_does_not_exist_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--log-level", "LOUD", "status"])
    assert result.exit_code == 2
    assert "Invalid value for '--log-level'" in result.output
    assert "Traceback" not in result.output


def test_the_serve_commands_take_the_log_level_given_or_info() -> None:
    from headcount.cli.common import log_level

    seen: list[str] = []

    @click.command()
    def probe() -> None:
        seen.append(log_level("INFO"))

    root = click.Group("root", params=[click.Option(["--log-level"], default=None)])
    root.add_command(probe)
    CliRunner().invoke(root, ["probe"], catch_exceptions=False)
    CliRunner().invoke(root, ["--log-level", "debug", "probe"], catch_exceptions=False)
    assert seen == ["INFO", "DEBUG"]


def _leaves(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    if isinstance(command, click.Group):
        out = []
        for name in command.list_commands(click.Context(command)):
            sub = command.get_command(click.Context(command), name)
            assert sub is not None
            out += _leaves(sub, [*path, name])
        return out
    return [(path, command)]


def test_every_command_shows_examples_that_parse() -> None:
    """Each command's --help ends with examples, and each example is a command
    line the real CLI accepts (so the examples cannot rot)."""
    import shlex

    from headcount.cli import COMMANDS, load_command

    checked = 0
    for name in COMMANDS:
        for path, command in _leaves(load_command(name), [name]):
            text = command.help or ""
            assert "Example" in text, " ".join(path)
            if path == ["corrupt"]:
                continue  # its options are parsed by the tool itself (headcount corrupt --help)
            block = text.split("Example", 1)[1].split(":", 1)[1]
            lines = block.replace("\\\n", " ").splitlines()
            for line in (ln.strip() for ln in lines):
                if line.startswith("headcount "):
                    try:
                        parse_command(shlex.split(line)[1:])
                    except click.BadParameter as exc:
                        # Parsed as far as checking that an input file exists.
                        assert "does not exist" in exc.format_message(), (line, exc)
                    checked += 1
    assert checked >= 25
