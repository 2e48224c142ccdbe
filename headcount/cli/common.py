"""What every command group shares: error handling, config loading, probes.

Nothing here imports more than click and the error hierarchy at module level,
so that ``headcount --help`` and a group's ``--help`` stay fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from headcount.errors import ConfigError, HeadcountError

if TYPE_CHECKING:
    from pathlib import Path

    from headcount.config import FederationConfig


def fail(exc: HeadcountError) -> NoReturn:
    """Print ``exc`` as one red line and exit (2 for a config error, else 1)."""
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)


def load_config(path: Path | None) -> FederationConfig:
    """The federation config at ``path`` (or the default place), or exit."""
    from headcount import config

    try:
        return config.load(path)
    except HeadcountError as exc:
        fail(exc)


def metrics_options(fn: Any) -> Any:
    fn = click.option(
        "--metrics-host",
        default=None,
        help="Address for --metrics-port (default: the config's metrics_host, 127.0.0.1).",
    )(fn)
    return click.option(
        "--metrics-port",
        default=None,
        type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics over plain HTTP on this port "
        "(default: the config's metrics_port; 0 turns them off).",
    )(fn)


def probe(cfg: FederationConfig, who: str, timeout_s: float) -> None:
    """Ask ``who`` (a party or "coordinator") for its gRPC health over mutual TLS,
    using its own certificate; PeerUnavailable (exit 1) unless it is serving."""
    from headcount import rpc, tls

    if who == "coordinator":
        address, cred = cfg.coordinator.address, cfg.coordinator.tls
    else:
        p = cfg.party(who)
        address, cred = p.address, p.tls
    credentials = tls.channel_credentials(cred.cert, cred.key, cfg.ca_cert)
    channel = rpc.secure_channel(address, credentials, max_message_bytes=cfg.max_message_bytes)
    with channel:
        rpc.wait_healthy(channel, who, timeout_s=timeout_s)
    click.echo(f"{who} at {address}: serving")


timeout_option = click.option(
    "--timeout",
    "timeout_s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to wait for an answer.",
)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(default: str) -> str:
    """The root ``--log-level`` if one was given, else ``default`` (a server's)."""
    given = click.get_current_context().find_root().params.get("log_level")
    return str(given).upper() if given else default


def log_json() -> bool:
    """Whether ``headcount --log-json`` was given, for a server re-labelling its logs."""
    return bool(click.get_current_context().find_root().params.get("log_json", False))


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the data as one JSON document on stdout (for scripts), nothing else.",
)


def echo_json(data: object) -> None:
    """Print ``data`` as indented JSON; numbers that are not finite become null."""
    import json
    import math

    def clean(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    click.echo(json.dumps(clean(data), indent=2, sort_keys=True, allow_nan=False))


def csv_items(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


class Group(click.Group):
    """Turn HeadcountError into a one-line message and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HeadcountError as exc:
            fail(exc)
