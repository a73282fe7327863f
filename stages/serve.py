"""``trait-interp serve``: the built dashboard on 127.0.0.1, or a copy that opens from disk. Not a DVC stage."""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.errors import UserInputError
from trait_interp.dashboard.server import LOOPBACK, address, make_server
from trait_interp.dashboard.site import export_site, is_site


def default_report(params: Path) -> Path:
    """The report stage's output in dvc.yaml: ``experiments/<experiment>/report``."""
    return Path("experiments") / str(stage_params(params, ("experiment",))["experiment"]) / "report"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@user_errors
def main(
    report: Annotated[
        Path | None, typer.Option(help="Built dashboard folder; default experiments/<experiment>/report (dvc repro).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback exposes the dashboard.")] = LOOPBACK,
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8000,
    static: Annotated[
        Path | None, typer.Option(help="Write a copy that opens from disk (file://) to this folder instead, and exit.")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Serve only the dashboard folder (never the repository) and print its address; Ctrl-C stops."""
    folder = report if report is not None else default_report(params)
    if not is_site(folder):
        raise UserInputError(f"{folder}: no built dashboard here (index.html, data/index.js); run `dvc repro report`")
    if static is not None:
        try:
            index = export_site(folder, static)
        except ValueError as err:
            raise UserInputError(str(err)) from None
        typer.echo(f"static dashboard: open {index.as_uri()}")
        return
    try:
        server = make_server(folder, host, port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UserInputError(f"port {port} is in use; pass --port N (or --port 0 for a free one)") from None
        raise UserInputError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --host/--port") from None
    if not _is_loopback(host):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can read the dashboard", err=True)
    typer.echo(f"serving {folder} at {address(server)} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
