"""The dashboard server serves its folder and nothing else: traversal, dot-files, symlinks, listings."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO
from trait_interp.dashboard.server import LOOPBACK, make_server, resolve_request


@pytest.fixture
def site(tmp_path):
    """repo-like/{.env, secret.txt, report/{index.html, data/..., link -> .., .hidden}}"""
    repo = tmp_path / "repo"
    report = repo / "report"
    (report / "data" / "sets").mkdir(parents=True)
    (report / "empty").mkdir()
    (report / "index.html").write_text("<!doctype html><title>dash</title>")
    (report / "data" / "index.js").write_text('TI.receive("index",{});\n')
    (report / ".hidden.js").write_text("hidden")
    (repo / ".env").write_text("OPENAI_API_KEY=sk-secret\n")
    (repo / "secret.txt").write_text("secret")
    os.symlink(repo, report / "link")  # a symlink out of the folder
    os.symlink(repo / "secret.txt", report / "data" / "secret.js")
    return report


@pytest.fixture
def served(site):
    server = make_server(site, port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def get(server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)  # the path goes out as written
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


ESCAPES = [
    "/../secret.txt", "/../.env", "/data/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/%2e%2e/secret.txt",
    "/data/%2e%2e/%2e%2e/.env", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/.env", "/.hidden.js", "/%2eenv",
    "//etc/passwd", "/" + str(Path("/etc/passwd")), "/link/secret.txt", "/link/.env", "/data/secret.js",
    "/data/..%5c..%5csecret.txt", "/data\\..\\..\\secret.txt", "/index.html%00.js", "/%ff", "/data/", "/empty",
    "/nope.js", "http://evil.example/../secret.txt",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_outside_the_folder_hidden_files_and_listings_are_404(served, path):
    status, _, body = get(served, path)
    assert status == 404, path
    assert b"secret" not in body and b"sk-" not in body


def test_the_folder_is_served_with_safe_headers(served):
    status, headers, body = get(served, "/")
    assert status == 200 and b"<title>dash</title>" in body and headers["content-type"].startswith("text/html")
    status, headers, body = get(served, "/data/index.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and body.startswith(b"TI.receive")
    assert "access-control-allow-origin" not in headers  # no CORS: other sites cannot read the dashboard
    assert headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in headers["content-security-policy"]
    assert get(served, "/data/index.js", "HEAD")[:1] == (200,) and get(served, "/data/index.js", "HEAD")[2] == b""
    assert get(served, "/index.html?x=1#frag")[0] == 200
    assert get(served, "/index.html", "POST")[0] == 501  # read-only


def test_binds_loopback_by_default(served):
    assert served.server_address[0] == LOOPBACK == "127.0.0.1"


def test_resolve_request_is_contained(site):
    root = site.resolve()
    assert resolve_request(root, "/") == root / "index.html"
    assert resolve_request(root, "/data/index.js") == root / "data" / "index.js"
    for path in ESCAPES:
        if path == "/%ff":  # not UTF-8: the handler turns the decode error into a 404
            with pytest.raises(UnicodeDecodeError):
                resolve_request(root, path)
        else:
            assert resolve_request(root, path) is None, path


def test_serve_command_prints_the_loopback_address_and_serves(site):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stages", "serve", "--report", str(site), "--port", "0"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving {site} at http://127.0.0.1:"), line + process.stderr.read()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/../.env")
        assert connection.getresponse().status == 404
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
