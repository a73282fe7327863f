"""The warm stage server (``trait-interp warm``, stages/_stage_server.py) runs a command as its own process would.

Each test builds small projects whose ``stages`` package is this repository's ``__main__.py`` and
``_stage_server.py`` beside a ``cli.py`` of the test's own: its ``main()`` reports what the command
saw (its argv, directory, environment, stdin, whether torch was already imported: the server
preloads it, a fresh process has not) and exits with a status of its own. The real stages run
through the server in the pipeline tests (tests/toy_project.py wraps their ``dvc repro``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages import _stage_server
from stages.warm import run_warm
from tests.conftest import REPO

REPORTING_CLI = '''
import os, sys, time
from pathlib import Path

def main():
    args = sys.argv[1:]
    print("marker", {marker!r})
    print("torch preloaded", "torch" in sys.modules)
    print("cwd", Path.cwd().name, "argv", " ".join(args), "probe", os.environ.get("PROBE"))
    print("stdin", sys.stdin.read().strip())
    print("to stderr", file=sys.stderr)
    if args and args[0] == "sleep":
        Path("started").write_text(str(os.getpid()))
        time.sleep(60)
    sys.exit({code})
'''


def fake_project(root: Path, marker: str, code: int = 3) -> Path:
    package = root / "stages"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("__main__.py", "_stage_server.py", "_cpu_kernels.py"):
        shutil.copy(REPO / "stages" / name, package / name)
    (package / "cli.py").write_text(REPORTING_CLI.format(marker=marker, code=code))
    return root


def script_running(commands: list[tuple[Path, dict[str, str]]], results: Path) -> list[str]:
    """A shell command that runs ``python -m stages hello`` in each folder (with extra variables), each
    one's stdout, stderr and status into ``results``."""
    lines = ["sleep 0.2", f'while [ ! -S "${_stage_server.SERVER_VARIABLE}" ]; do sleep 0.2; done']
    for index, (folder, extra) in enumerate(commands):
        variables = " ".join(f"{key}={value}" for key, value in extra.items())
        out = results / f"{index}"
        lines.append(f'(cd {folder} && echo fed-{index} | env {variables} {sys.executable} -m stages hello {index} '
                     f'> {out}.out 2> {out}.err; echo $? > {out}.code)')
    return ["bash", "-c", "\n".join(lines)]


def outputs(results: Path, index: int) -> tuple[str, str, int]:
    base = results / str(index)
    return (base.with_suffix(".out").read_text(), base.with_suffix(".err").read_text(),
            int(base.with_suffix(".code").read_text()))


def test_a_served_command_sees_its_own_project_files_environment_and_status(tmp_path, capfd):
    first, second = fake_project(tmp_path / "first", "one"), fake_project(tmp_path / "second", "two", code=0)
    results = tmp_path / "results"
    results.mkdir()
    status = run_warm(script_running([(first, {"PROBE": "a"}), (second, {"PROBE": "b"})], results))
    assert status == 0
    out, err, code = outputs(results, 0)
    # served (torch came with the server), yet its own cli.py, directory, argv, environment and stdin
    assert out.splitlines() == ["marker one", "torch preloaded True", "cwd first argv hello 0 probe a", "stdin fed-0"]
    assert err == "to stderr\n" and code == 3
    out, _, code = outputs(results, 1)
    assert out.splitlines()[:3] == ["marker two", "torch preloaded True", "cwd second argv hello 1 probe b"]
    assert code == 0
    assert "warm: 2 stage command(s) ran on the warm stage server" in capfd.readouterr().err


def test_without_a_server_or_with_other_import_time_variables_it_runs_in_its_own_process(tmp_path, capfd):
    project = fake_project(tmp_path / "project", "alone")
    env = {**os.environ, _stage_server.SERVER_VARIABLE: str(tmp_path / "no-such.sock")}
    done = subprocess.run([sys.executable, "-m", "stages", "hello"], cwd=project, env=env, input="x",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "torch preloaded False" in done.stdout and done.stderr == "to stderr\n"

    results = tmp_path / "results"
    results.mkdir()
    assert run_warm(script_running([(project, {"HF_HOME": str(tmp_path / "elsewhere")})], results)) == 0
    out, err, code = outputs(results, 0)
    assert "torch preloaded False" in out and code == 3 and err == "to stderr\n"
    said = capfd.readouterr().err
    assert "warm: 0 stage command(s)" in said and "1 ran in their own process (HF_HOME:" in said


def test_a_signal_to_the_command_stops_the_served_process(tmp_path):
    project = fake_project(tmp_path / "project", "sleeper")
    folder = tmp_path / "server"
    folder.mkdir()
    socket_path = folder / "s.sock"
    server = subprocess.Popen([sys.executable, "-m", "stages._stage_server", str(socket_path), str(os.getpid()),
                               str(folder / "log")], cwd=REPO, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not socket_path.exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
        client = subprocess.Popen([sys.executable, "-m", "stages", "sleep"], cwd=project, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, _stage_server.SERVER_VARIABLE: str(socket_path)})
        started = project / "started"
        while not started.exists():
            assert time.monotonic() < deadline and client.poll() is None
            time.sleep(0.1)
        child = int(started.read_text())
        assert child != client.pid  # the sleep runs in the server's fork, not in the client
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=30) == 128 + signal.SIGTERM or client.returncode == -signal.SIGTERM
        while _alive(child):
            assert time.monotonic() < deadline, "the served process outlived its command"
            time.sleep(0.1)
        assert (folder / "log").read_text() == "served\n"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not socket_path.exists()  # the server removes its socket when it stops


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.parametrize("command", [[], ["no-such-command-anywhere"]])
def test_warm_without_a_runnable_command_says_how_to_call_it(command):
    done = subprocess.run([sys.executable, "-m", "stages", "warm", "--", *command], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: warm:") and "trait-interp warm -- dvc repro" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
