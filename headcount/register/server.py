"""A read-only web server for the built register (standard library only).

It serves the register's own pages (``*.html`` regular files directly inside
the directory) to GET and HEAD, and nothing else: no directory listing, no
dotfiles, no symlinks, no subdirectories, 405 for every other method. Each
response carries the register's Content-Security-Policy and headers that stop
sniffing, framing and referrers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from headcount.errors import FailedPrecondition
from headcount.register.render import CONTENT_SECURITY_POLICY

log = logging.getLogger(__name__)

_SERVED_SUFFIXES = (".html",)


class _RegisterHandler(SimpleHTTPRequestHandler):
    server_version = "headcount-register"
    sys_version = ""
    extensions_map = {".html": "text/html; charset=utf-8"}  # noqa: RUF012 (stdlib's shape)

    def _refuse_method(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def __getattr__(self, name: str) -> Any:
        # The stdlib dispatches method M to do_M and answers 501 if there is none;
        # every method other than GET and HEAD is refused with 405 instead.
        if name.startswith("do_"):
            return self._refuse_method
        raise AttributeError(name)

    def send_head(self) -> Any:
        root = Path(self.directory)
        path = Path(self.translate_path(self.path))  # drops query and fragment, resolves ".."
        if path == root:
            path = root / "index.html"
        # Only a page the register wrote: a regular *.html file directly in the root.
        if (
            path.parent != root
            or path.name.startswith(".")
            or path.suffix not in _SERVED_SUFFIXES
            or path.is_symlink()
            or not path.is_file()
        ):
            self.send_error(HTTPStatus.NOT_FOUND, "Not found")
            return None
        self.path = "/" + path.name
        return super().send_head()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "Not found")
        return None

    def end_headers(self) -> None:
        self.send_header(
            "Content-Security-Policy", CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'"
        )
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.info("register %s: " + format, self.address_string(), *args)


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(out_dir: Path, host: str = "127.0.0.1", port: int = 8088) -> ThreadingHTTPServer:
    """A server for ``out_dir`` bound to ``host:port`` (port 0: any free port), not
    yet serving; call ``serve_forever`` (and ``shutdown``/``server_close``).

    Raises ``FailedPrecondition`` if the address cannot be bound (e.g. in use)."""
    root = Path(out_dir).resolve()
    handler: Callable[..., _RegisterHandler] = partial(_RegisterHandler, directory=str(root))
    server_class = _ThreadingHTTPServerV6 if ":" in host else ThreadingHTTPServer
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        raise FailedPrecondition(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    return server


def serve(
    out_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8088,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``out_dir`` until interrupted (Ctrl-C); ``ready`` gets the URL once bound."""
    server = make_server(out_dir, host, port)
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{bound_host!s}:{bound_port}/"
    log.info("register: serving %s at %s", out_dir, url)
    if ready is not None:
        ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("register: stopped")
    finally:
        server.server_close()
