"""``headcount register``: build and serve the public transparency register.

Imports of the builder are deferred to the commands, so ``headcount --help``
stays quick. A ``HeadcountError`` raised here reaches the top-level group in
``headcount/cli.py``, which prints it on one line and exits non-zero.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import click

from headcount.cli.options import config_option

log = logging.getLogger(__name__)

_OUT_HELP = "Directory the site is written to (created if missing); only its pages are replaced."
_DB_HELP = (
    "Read this copy of the audit log instead of the coordinator's state file "
    "(e.g. a department's replica)."
)

_out_option = click.option(
    "--out",
    "out_dir",
    default=Path("register"),
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help=_OUT_HELP,
)
_db_option = click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help=_DB_HELP,
)


def _build(config_path: Path | None, out_dir: Path, db_path: Path | None) -> bool:
    """Build the pages; True if the log verified."""
    from headcount import config as config_mod
    from headcount.register import load_register, write_register

    reg = load_register(config_mod.load(config_path), db_path)
    index = write_register(reg, out_dir)
    verification = reg.verification
    if verification.ok:
        click.echo(f"register written to {index} ({verification.events} events, verified)")
    else:
        click.secho(
            f"register written to {index}; the audit log FAILS verification: "
            f"{verification.message}",
            fg="red",
            err=True,
        )
    return verification.ok


@click.group("register", context_settings={"help_option_names": ["-h", "--help"]})
def register() -> None:
    """The public transparency register: a read-only web page of every project,
    linkage epoch and query (purpose, requesting role, departments, privacy
    budget spent and left, the released table), built from the signed audit log,
    with a banner saying whether the log verifies.

    The pages are plain HTML with no script and nothing fetched from elsewhere;
    any static web server can publish them.
    """


@register.command("build")
@config_option
@_out_option
@_db_option
def register_build(config_path: Path | None, out_dir: Path, db_path: Path | None) -> None:
    """Verify the audit log and write the register's pages into --out.

    A log that fails verification is still written out, under a FAILED banner
    naming the first bad event; the command then exits with code 1.

    \b
    Example:
      headcount register build --config fed/federation.toml --out site
    """
    if not _build(config_path, out_dir, db_path):
        raise SystemExit(1)


_HOLDING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Transparency register</title>
<meta http-equiv="refresh" content="5"></head>
<body><h1>Transparency register</h1>
<p>The federation's audit log does not exist yet: its coordinator has not started.
This page will list every project, epoch and query once it has.</p></body></html>
"""


@register.command("serve")
@config_option
@_out_option
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8088, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--rebuild-every",
    "rebuild_s",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Also rebuild the pages every this many seconds (0: only at start).",
)
def register_serve(
    config_path: Path | None,
    out_dir: Path,
    db_path: Path | None,
    host: str,
    port: int,
    rebuild_s: int,
) -> None:
    """Build the register, then serve it read-only over HTTP until Ctrl-C.

    Only the register's own pages are served, to GET and HEAD. Put a TLS
    reverse proxy in front of it to publish beyond this machine.

    \b
    Example:
      headcount register serve --config fed/federation.toml --out site --port 8088
    """
    from headcount.errors import FailedPrecondition, HeadcountError
    from headcount.register import serve

    try:
        _build(config_path, out_dir, db_path)
    except FailedPrecondition as exc:
        if not rebuild_s:
            raise
        # Started before the coordinator has written its log (a whole
        # federation starting at once): publish a holding page until it has.
        log.warning("register: %s; serving a holding page until it appears", exc)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "index.html").write_text(_HOLDING_PAGE, encoding="utf-8")
    stop = threading.Event()

    def rebuild() -> None:
        while not stop.wait(rebuild_s):
            try:
                _build(config_path, out_dir, db_path)
            except HeadcountError as exc:
                log.warning("register: rebuild failed, keeping the last pages: %s", exc)

    if rebuild_s:
        threading.Thread(target=rebuild, name="register-rebuild", daemon=True).start()
    try:
        serve(out_dir, host, port, ready=lambda url: click.echo(f"serving {url} (Ctrl-C to stop)"))
    finally:
        stop.set()
