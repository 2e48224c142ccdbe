"""Click options shared by the top-level CLI and the command groups it adds
(``headcount register``, ``headcount report``), which live beside their own
packages and so cannot import ``headcount.cli`` without a cycle."""

from __future__ import annotations

from pathlib import Path

import click

CONFIG_HELP = "Federation config file (default: $HEADCOUNT_CONFIG or ./federation.toml)."

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP
)
