"""A warm process that runs stage commands without paying their imports each time (``trait-interp warm``).

Why: a stage of a tiny model spends most of its seconds importing torch and transformers (2-5 s a
stage, against well under a second of work); a 173-trait pipeline runs over a thousand stage
processes. The server imports those libraries once, then forks one child per stage command. Each
``python -m stages <stage> ...`` that DVC starts finds the server through ``TRAIT_INTERP_STAGE_SERVER``
(a Unix socket), hands it its argv, working directory, environment and its stdin/stdout/stderr, and
waits for the child's exit status; signals it receives are passed on to the child. When there is no
server, or it cannot take the command, the command runs in its own process as always.

What a child shares with the server is imported third-party code only: this project's own modules
(``stages``, ``trait_interp``, ``schemas``) are dropped from the child's ``sys.modules`` and imported
afresh from the command's working directory, as ``python -m stages`` would. Libraries read some
environment variables once, at import (the Hugging Face cache, offline mode, thread counts); a command
whose such variables differ from the server's, or another interpreter or interpreter flags, runs in
its own process instead. The server only imports: no tensor work, no CUDA, nothing that starts a
thread pool before it forks.

Standard library only (with stages/_cpu_kernels.py): the client side runs at the start of every stage command.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Mapping

from stages._cpu_kernels import pin_cpu_kernels

SERVER_VARIABLE = "TRAIT_INTERP_STAGE_SERVER"
"""The environment variable that names the server's socket (set by ``trait-interp warm``)."""

PRELOAD: tuple[str, ...] = (
    "torch", "transformers", "transformers.modeling_utils", "transformers.generation",
    "transformers.models.llama.modeling_llama", "transformers.models.gemma2.modeling_gemma2",
    "transformers.models.mistral.modeling_mistral", "tokenizers", "safetensors.torch", "peft",
    "numpy", "pandas", "pyarrow.parquet", "pandera.pandas", "scipy.stats", "sklearn.linear_model",
    "openai", "jinja2", "yaml", "ruamel.yaml", "typer", "tqdm.auto",
)
"""What the server imports before it serves (a module that is missing is skipped)."""

IMPORT_TIME_PREFIXES: tuple[str, ...] = (
    "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "CUDA_", "OMP_", "MKL_", "OPENBLAS_",
    "TOKENIZERS_", "PYTHON", "KMP_", "NUMEXPR_", "LD_", "ATEN_", "ONEDNN_", "DNNL_", "TRAIT_INTERP_CPU_",
)
"""Environment variables libraries may read once at import: a command must agree with the server on all of them."""

PROJECT_PACKAGES: tuple[str, ...] = ("stages", "trait_interp", "schemas")
"""This project's packages: imported afresh in every child, from the command's own checkout."""

_HEADER = struct.Struct("!I")


def import_time_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that a library may have read at import."""
    return {key: value for key, value in environ.items() if key.startswith(IMPORT_TIME_PREFIXES)}


def interpreter_identity() -> dict[str, object]:
    """What must match between a command and the server for the server's imports to be the command's."""
    return {
        "executable": os.path.realpath(sys.executable),
        "version": sys.version,
        "flags": list(sys.flags),
        "xoptions": {str(k): str(v) for k, v in sys._xoptions.items()},
        "warnoptions": list(sys.warnoptions),
    }


def _send_message(conn: socket.socket, message: Mapping[str, object]) -> None:
    data = json.dumps(message).encode()
    conn.sendall(_HEADER.pack(len(data)) + data)


def _receive_exact(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive_message(conn: socket.socket) -> dict:
    (size,) = _HEADER.unpack(_receive_exact(conn, _HEADER.size))
    return json.loads(_receive_exact(conn, size))


# --- client: the start of every `python -m stages ...` -------------------------------------------------


def run_on_server() -> None:
    """Run this command on the warm server and exit with its status; return at once when there is none.

    Returns (and the command runs here) when ``TRAIT_INTERP_STAGE_SERVER`` is unset, the server is not
    there, or it declines the command (another interpreter, flags or import-time environment)."""
    path = os.environ.get(SERVER_VARIABLE)
    if not path:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "env": dict(os.environ),
                              "interpreter": interpreter_identity()}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        answer = _receive_message(conn)
    except OSError:  # no server (yet, or any more): run here
        conn.close()
        return
    if not answer.get("run"):
        conn.close()
        return
    child = int(answer["pid"])
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    try:
        code = int(_receive_message(conn)["exit"])
    except (OSError, ConnectionError, KeyError, ValueError):
        if forwarded:  # stopped by the signal passed on to it: the status a shell gives
            code = 128 + forwarded[-1]
        else:
            print(f"error: the stage server's process for this command ({child}) ended without an exit status",
                  file=sys.stderr)
            code = 1
    os._exit(code)


# --- server -------------------------------------------------------------------------------------------


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` (skipping missing ones); returns those imported."""
    import importlib

    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    return done


def serve(path: str, parent: int | None = None, log: str | None = None) -> None:
    """Import the heavy libraries, then answer stage commands on the socket ``path`` until SIGTERM.

    Also stops when the process ``parent`` (the ``trait-interp warm`` that started it) is gone. Each
    command adds a line to ``log``: ``served`` or ``declined <why>``."""
    pin_cpu_kernels()  # as every stage command does before torch loads
    started_environment = import_time_environment(os.environ)
    before = dict(os.environ)
    preload()
    # what the imports themselves put into the environment (torch sets KMP_* variables, for one): a
    # fresh process would have them too, so each child gets them beside the command's own
    set_by_imports = {key: value for key, value in os.environ.items() if key not in before}
    sys.stdout.flush()  # nothing an import printed may reach a command's output
    sys.stderr.flush()
    if _cuda_started():  # a forked child could not use the GPU: serve nothing, every stage runs alone
        print("warm: an import started CUDA in the stage server; stages run in their own processes",
              file=sys.stderr)
        return
    identity = interpreter_identity()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = f"{path}.{os.getpid()}.tmp"
    listener.bind(temporary)
    listener.listen(64)
    os.replace(temporary, path)  # clients see the socket only once it accepts
    listener.settimeout(2.0)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the commands, and the wrapper stops us
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while not stopping and (parent is None or os.getppid() == parent):
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            if os.fork() == 0:
                listener.close()
                _child(conn, started_environment, set_by_imports, identity, log)  # never returns
            conn.close()
    finally:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _child(conn: socket.socket, started_environment: dict[str, str], set_by_imports: dict[str, str],
           identity: dict[str, object], log: str | None) -> None:
    """One command, in a fork of the server: take over the client's files, directory and environment, run."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits for its own subprocesses
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        header, fds, _flags, _address = socket.recv_fds(conn, _HEADER.size, 3)
        (size,) = _HEADER.unpack(header)
        request = json.loads(_receive_exact(conn, size))
        why = _declined(request, started_environment, identity)
        why = why or ("" if len(fds) == 3 else "no standard streams")
        _note(log, f"declined {why}" if why else "served")
        if why:
            _send_message(conn, {"run": False, "why": why})
            os._exit(0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for key, value in set_by_imports.items():
            os.environ.setdefault(key, value)
        sys.stdout.reconfigure(line_buffering=os.isatty(1) or bool(os.environ.get("PYTHONUNBUFFERED")))
        _send_message(conn, {"run": True, "pid": os.getpid()})
        threading.Thread(target=_exit_when_client_goes, args=(conn,), daemon=True).start()
        code = _run_stage_command(list(request["argv"]), str(request["path0"]))
    except BaseException:  # noqa: BLE001 - whatever happens, the client must get a status
        traceback.print_exc()
    try:
        _send_message(conn, {"exit": code})
    finally:
        os._exit(code)


def _note(log: str | None, line: str) -> None:
    if log:
        with open(log, "a", encoding="utf-8") as file:  # one short append: whole lines, in any order
            file.write(line.replace("\n", " ") + "\n")


def _declined(request: Mapping, started_environment: dict[str, str], identity: dict[str, object]) -> str:
    """Why this server cannot run the command as its own process would ('' when it can)."""
    if request.get("interpreter") != identity:
        return "another interpreter or other interpreter flags"
    theirs = import_time_environment(request.get("env", {}))
    differ = sorted(key for key in theirs.keys() | started_environment.keys()
                    if theirs.get(key) != started_environment.get(key))
    if differ:
        return f"{', '.join(differ)}: read by libraries at import, set otherwise than for the server"
    return ""


def _exit_when_client_goes(conn: socket.socket) -> None:
    """The client never writes again: end of file means it is gone (killed), so the command stops too."""
    try:
        conn.recv(1)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _run_stage_command(argv: list[str], path0: str) -> int:
    """``python -m stages`` in this process: fresh project modules, the command's argv; then a normal exit."""
    for name in [name for name in sys.modules if name.split(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]
    sys.path[0] = path0
    sys.argv = argv
    code: int = 0
    try:
        from stages.cli import main

        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, status 1
        traceback.print_exc()
        code = 1
    _shut_down_like_the_interpreter()
    return code


def _shut_down_like_the_interpreter() -> None:
    """What a normal interpreter exit does before the process ends: wait for threads, run atexit, flush."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":  # python -m stages._stage_server <socket> <parent pid> <log>
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
