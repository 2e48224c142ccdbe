"""``headcount coordinator``: serve and probe the coordinator."""

from __future__ import annotations

from pathlib import Path

import click

from headcount.cli.common import (
    Group,
    load_config,
    log_json,
    log_level,
    metrics_options,
    probe,
    timeout_option,
)
from headcount.cli.options import config_option
from headcount.log import configure


@click.group(cls=Group)
def coordinator() -> None:
    """Run the coordinator."""


@coordinator.command("serve")
@config_option
@metrics_options
def coordinator_serve(
    config_path: Path | None, metrics_port: int | None, metrics_host: str | None
) -> None:
    """Serve the Coordinator gRPC service (operator and analyst roles by certificate).

    \b
    Example:
      headcount coordinator serve --config fed/federation.toml
    """
    from coordinator.server import serve

    cfg = load_config(config_path)
    configure(log_level("INFO"), json_lines=log_json(), name="coordinator")
    serve(cfg, metrics_port=metrics_port, metrics_host=metrics_host)


@coordinator.command("health")
@config_option
@timeout_option
def coordinator_health(config_path: Path | None, timeout_s: float) -> None:
    """Exit 0 if the coordinator answers the gRPC health check (a liveness probe,
    e.g. for a container healthcheck; it uses the coordinator's own certificate).

    \b
    Example:
      headcount coordinator health --config fed/federation.toml
    """
    probe(load_config(config_path), "coordinator", timeout_s)
