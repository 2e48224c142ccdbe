"""``headcount health``: probe the servers whose private key this process holds."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from headcount.cli.common import load_config, probe, timeout_option
from headcount.cli.options import config_option
from headcount.errors import HeadcountError

if TYPE_CHECKING:
    from headcount.config import FederationConfig


def servers_keyed_here(cfg: FederationConfig) -> list[str]:
    """The gRPC servers (parties by name, then "coordinator") whose private TLS
    key this process can read, in config order."""
    keyed = [(p.name, p.tls.key) for p in cfg.parties]
    keyed.append(("coordinator", cfg.coordinator.tls.key))
    return [who for who, key in keyed if key.is_file() and os.access(key, os.R_OK)]


@click.command("health")
@config_option
@timeout_option
def health(config_path: Path | None, timeout_s: float) -> None:
    """Exit 0 if every node or coordinator whose private key this process can
    read answers the gRPC health check over mutual TLS (with that key), else 1.

    One image runs every role, and each container holds only its own key
    (docker/compose.yaml), so the key says which server the container runs:
    this is the image's HEALTHCHECK. With no node or coordinator key (the
    register, the operator's one-off commands) there is nothing to ask and it
    exits 0; compose gives the register an HTTP probe of its own.

    \b
    Example:
      headcount health --config /fed/federation.toml
      headcount health --config fed/federation.toml --timeout 2
    """
    cfg = load_config(config_path)
    targets = servers_keyed_here(cfg)
    if not targets:
        click.echo("no node or coordinator key readable here: nothing to probe")
        return
    failed = []
    for who in targets:
        try:
            probe(cfg, who, timeout_s)
        except HeadcountError as exc:
            click.secho(f"{who}: {exc}", fg="red", err=True)
            failed.append(who)
    if failed:
        sys.exit(1)
