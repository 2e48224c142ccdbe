"""The ``headcount`` command line: one module per command group.

The root group knows each command's module and one-line help, and imports a
command's module only when that command runs (or its own ``--help`` is
asked for), so ``headcount --help`` loads neither the linkage kernel (numba,
pandas) nor OpenDP. ``tests/unit/test_cli.py`` checks that every line below
matches its command's own help.
"""

from __future__ import annotations

import importlib

import click

from headcount.cli.common import LOG_LEVELS, Group
from headcount.log import configure

# name -> (module, attribute, its one-line help: the command's own
# get_short_help_str(60)), in the order --help lists them.
SHORT_HELP_CHARS = 60
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "headcount.cli.demo",
        "demo",
        "Run a whole federation on this machine: CA, synthetic...",
    ),
    "federation": (
        "headcount.cli.federation",
        "federation",
        "Create and inspect a federation (CA, certificates, config).",
    ),
    "synth": (
        "headcount.cli.federation",
        "synth",
        "Write a synthetic population: one CSV per department plus...",
    ),
    "node": ("headcount.cli.node", "node", "Run or check a department's party node."),
    "coordinator": ("headcount.cli.coordinator", "coordinator", "Run the coordinator."),
    "health": (
        "headcount.cli.health",
        "health",
        "Exit 0 if every node or coordinator whose private key...",
    ),
    "ceremony": (
        "headcount.cli.operator",
        "ceremony",
        "Run the key ceremony: nodes derive a linkage secret the...",
    ),
    "link": (
        "headcount.cli.operator",
        "link",
        "Run a linkage epoch: fresh tokens, keyed encodings,...",
    ),
    "project": (
        "headcount.cli.project",
        "project",
        "Five Safes, safe projects: propose, approve, revoke and...",
    ),
    "query": (
        "headcount.cli.analyst",
        "query",
        "Ask for a protected count: POPULATION's records grouped...",
    ),
    "status": (
        "headcount.cli.analyst",
        "status",
        "Show the federation: parties and their health, current...",
    ),
    "audit": (
        "headcount.cli.audit",
        "audit",
        "Read and verify the hash-chained, signed audit log.",
    ),
    "register": (
        "headcount.register.cli",
        "register",
        "The public transparency register: a read-only web page of...",
    ),
    "report": (
        "headcount.report.cli",
        "report",
        "Reports on the federation's linkage, from aggregates only.",
    ),
    "link-files": (
        "headcount.cli.linkfiles",
        "link_files_command",
        "Link two or more local CSV files with the federation's...",
    ),
    "corrupt": (
        "headcount.cli.linkfiles",
        "corrupt_command",
        "Add reproducible recording errors to any CSV (typos, OCR...",
    ),
    "attack": (
        "headcount.cli.attack",
        "attack",
        "Run the attack suite against a live local federation and...",
    ),
}


def load_command(name: str) -> click.Command:
    """The command ``name``, its module imported now."""
    module, attribute, _ = COMMANDS[name]
    command: click.Command = getattr(importlib.import_module(module), attribute)
    return command


class _Root(Group):
    """Commands loaded on first use; --help lists them from `COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="How much to log: DEBUG, INFO, WARNING or ERROR"
    " (default: WARNING; INFO for the serve commands).",
)
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines (for log shippers).")
@click.version_option(package_name="headcount")
def cli(log_level: str | None, log_json: bool) -> None:
    """Headcount: count children across departments without naming any of them.

    Party nodes sit beside each department's data and send only keyed
    encodings and ciphertexts; a coordinator links records and computes
    aggregate counts that leave only after differential-privacy noise and the
    small-number rule.

    Quick start:  headcount demo
    """
    configure(log_level or "WARNING", json_lines=log_json)


def main() -> None:
    cli()


__all__ = ["COMMANDS", "cli", "load_command", "main"]
