"""A static file server for one built dashboard folder, and nothing else.

- Serves only files under the folder: a path with ``..``, a dot-file segment (``.env``, ``.git``),
  a backslash or a NUL, or one that resolves (symlinks followed) outside the folder is 404.
- No directory listings: a directory is served as its ``index.html`` or is 404.
- GET and HEAD only; no CORS headers; a content security policy that allows only the folder itself.
- Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import mimetypes
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOOPBACK = "127.0.0.1"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".json": "application/json", ".png": "image/png",
         ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    # element.style from scripts is CSSOM, not inline style markup: 'self' is enough for everything
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def _inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved (symlinks followed) if it exists within ``root``, else None."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if resolved == root or root in resolved.parents else None


def resolve_request(root: Path, request_path: str) -> Path | None:
    """The file a request path names inside ``root`` (resolved), or None when it must be 404."""
    path = unquote(urlsplit(request_path).path, errors="strict")
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") for p in parts):  # "..", ".env", ".git", hidden temp files
        return None
    target = _inside(root, root.joinpath(*parts))
    if target is not None and target.is_dir():  # no listings: its index.html or nothing
        target = _inside(root, target / "index.html")
    return target if target is not None and target.is_file() else None


class DashboardHandler(BaseHTTPRequestHandler):
    """Serves ``root`` (an absolute, resolved folder); see the module docstring for the rules."""

    server_version = "trait-interp"
    sys_version = ""

    def __init__(self, *args: object, root: Path, quiet: bool = False, **kwargs: object) -> None:
        self.root = root
        self.quiet = quiet
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # handles the request

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(body=False)

    def _send(self, body: bool) -> None:
        try:
            target = resolve_request(self.root, self.path)
        except UnicodeDecodeError:
            target = None
        if target is None:
            self._not_found(body)
            return
        kind = TYPES.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._respond(HTTPStatus.OK, kind, target.read_bytes(), body)

    def _not_found(self, body: bool) -> None:
        self._respond(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 not found\n", body)

    def _respond(self, status: HTTPStatus, kind: str, data: bytes, body: bool) -> None:
        """Status, the fixed safety headers, and the bytes (left out for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        if not self.quiet:
            super().log_message(format, *args)


def make_server(root: Path, host: str = LOOPBACK, port: int = 8000, quiet: bool = False) -> ThreadingHTTPServer:
    """A threading server for ``root`` (not started); ``port=0`` picks a free port."""
    handler = partial(DashboardHandler, root=Path(root).resolve(strict=True), quiet=quiet)
    return ThreadingHTTPServer((host, port), handler)


def address(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
