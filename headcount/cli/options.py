"""Click options shared by the command groups, ``headcount register`` and
``headcount report`` among them (which live beside their own packages)."""

from __future__ import annotations

from pathlib import Path

import click

CONFIG_HELP = "Federation config file (default: $HEADCOUNT_CONFIG or ./federation.toml)."

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP
)
