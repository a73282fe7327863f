"""Write the dashboard site: the page assets (``web/``) and one script per data key, atomically.

A data file ``data/<key>.js`` holds exactly ``TI.receive("<key>", <json>);`` on one line, so a
page loads it with a ``<script>`` tag over ``http://`` or from disk (``file://``), and any tool can
read it back (``read_data``). Keys are ``/``-separated names of ``[A-Za-z0-9_-]`` parts.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trait_interp.core.io import atomic_dir

WEB = Path(__file__).parent / "web"  # index.html, style.css, js/
MARKERS = ("index.html", "data/index.js")  # what makes a folder a built dashboard
_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_PREFIX, _SUFFIX = "TI.receive(", ");\n"


def data_script(key: str, value: Any) -> str:
    """The text of ``data/<key>.js``: compact JSON (no NaN) wrapped in one ``TI.receive`` call."""
    if not _KEY.match(key):
        raise ValueError(f"data key {key!r} must be /-separated parts of letters, digits, _ and -")
    payload = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return f"{_PREFIX}{json.dumps(key)},{payload}{_SUFFIX}"


def read_data(path: Path) -> tuple[str, Any]:
    """``(key, value)`` of a data script written by ``data_script``."""
    text = Path(path).read_text(encoding="utf-8")
    if not (text.startswith(_PREFIX) and text.endswith(_SUFFIX)):
        raise ValueError(f"{path}: not a dashboard data script")
    key, value = json.loads(f"[{text[len(_PREFIX):-len(_SUFFIX)]}]")
    return key, value


def write_site(out: Path, data: Mapping[str, Any]) -> None:
    """Replace ``out`` with the assets and ``data/<key>.js`` for every key (``index`` required)."""
    if "index" not in data:
        raise ValueError("the site needs an 'index' data key")
    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)  # a temp dir is private (0700); the site is meant to be read, served or shared
        shutil.copytree(WEB, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        for key, value in data.items():
            target = tmp / "data" / f"{key}.js"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data_script(key, value), encoding="utf-8")


def is_site(folder: Path) -> bool:
    return all((Path(folder) / marker).is_file() for marker in MARKERS)


def export_site(site: Path, dest: Path) -> Path:
    """Copy a built dashboard to ``dest`` (replaced whole, atomically); returns its ``index.html``.

    ``dest`` must be new, empty, or an earlier export: an unrelated folder is never replaced.
    """
    site, dest = Path(site).resolve(), Path(dest).resolve()
    if dest == site or site in dest.parents or dest in site.parents:
        raise ValueError(f"{dest}: the export folder must be outside {site} (and not contain it)")
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not is_site(dest))):
        raise ValueError(f"{dest}: exists and is not a dashboard export; choose a new or empty folder")
    with atomic_dir(dest) as tmp:
        tmp.chmod(0o755)
        shutil.copytree(site, tmp, dirs_exist_ok=True, symlinks=False)
    return dest / "index.html"
