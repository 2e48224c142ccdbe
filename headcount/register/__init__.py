"""The public transparency register: a static site built from the audit log.

``build_register`` reads the coordinator's audit log read-only, verifies its
hash chain and signatures with the federation's audit public key, and writes
plain HTML pages (``index.html``, ``events.html``, one ``event-N.html`` per
audit event and one ``query-N.html`` per query) into a directory, from the
Jinja2 templates in ``templates/`` (autoescaped). ``serve`` publishes that
directory, read-only, with the standard library's HTTP server. ``headcount
register build|serve`` are the command-line entry points.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from headcount import config as config_mod
from headcount.config import FederationConfig
from headcount.register.events import event_page
from headcount.register.model import Register, load_register
from headcount.register.render import (
    EVENTS,
    INDEX,
    render_event,
    render_events,
    render_index,
    render_query,
)
from headcount.register.server import make_server, serve

__all__ = [
    "Register",
    "build_register",
    "load_register",
    "make_server",
    "serve",
    "write_register",
]

log = logging.getLogger(__name__)


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically, so a server never hands out half a page."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_register(reg: Register, out_dir: Path | str) -> Path:
    """Write the pages of ``reg`` into ``out_dir``; return ``index.html``'s path.

    Pages from an earlier build that no longer exist are removed; no other
    file in ``out_dir`` is touched.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = {INDEX: render_index(reg), EVENTS: render_events(reg)}
    pages.update({q.page: render_query(reg, q) for q in reg.queries})
    pages.update({event_page(e.seq): render_event(reg, i) for i, e in enumerate(reg.events)})
    for name, text in pages.items():
        _write(out / name, text)
    for pattern in ("query-*.html", "event-*.html"):
        for stale in out.glob(pattern):
            if stale.name not in pages:
                stale.unlink()
    log.info("register: %d pages written to %s", len(pages), out)
    return out / INDEX


def build_register(
    config: Path | str | FederationConfig, out_dir: Path | str, *, db_path: Path | None = None
) -> Path:
    """Build the register from the audit log into ``out_dir``; return ``index.html``'s path.

    ``config`` is the federation config (a path, or one already loaded); the log
    read is ``db_path`` if given, else the coordinator's state file. A log that
    fails verification is still rendered, under a FAILED banner naming the first
    bad event. Raises ``ConfigError`` for a bad config and ``FailedPrecondition``
    if the log cannot be read.
    """
    cfg = config if isinstance(config, FederationConfig) else config_mod.load(Path(config))
    return write_register(load_register(cfg, db_path), out_dir)
