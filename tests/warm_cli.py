"""`python -m cli ...` processes for tests, forked from an interpreter that has the heavy libraries imported.

The suite starts well over a hundred CLI processes, and a training sweep spends ~8 s of CPU importing torch,
transformers, MLflow, SciPy and matplotlib (and trl and sentence-transformers for synthetic sets) before it
runs a line of SynPro. Here one server process per pytest worker imports those libraries once and forks a
child per call. The child then runs `python -m cli` as a fresh process would: its own pid (signals and
SIGKILL reach it alone), working directory, environment, stdio, `sys.argv`, atexit handlers and exit
status; SynPro's own modules are imported in the child, so everything they read from the environment at
import is the call's.

What the libraries read from the environment at import is the server's, so a call whose environment differs
from the server's in anything but `PER_CALL` (`SYNPRO_*`, `COLUMNS`, `TORCHINDUCTOR_CACHE_DIR`, and `PYTHONPATH`:
the child sets its own `sys.path`) starts a plain subprocess, as does any argv that is not `python -m cli ...`,
and every call with SYNPRO_TEST_PLAIN_PROCESSES=1. Variables the server's own imports set (scikit-learn sets
two OpenMP ones) count as the server's when the call holds the values those imports gave them: a test that
imports the same library in the pytest process sets them too, and a plain process would end up with them.
A call sent to a plain process because the pytest process's own environment changed warns, naming what
changed. `run` and `Popen` take the arguments of `subprocess.run` and `subprocess.Popen` that the tests use.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any

PRELOAD = ("torch", "transformers", "transformers.models.olmo2.modeling_olmo2", "tokenizers", "mlflow",
           "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "optuna", "sqlalchemy", "scipy.stats",
           "scipy.interpolate", "scipy.optimize", "matplotlib.pyplot", "trl", "sentence_transformers")
# Read at run time (SynPro by the child's own imports, torch's inductor when it first needs its cache), so they
# may differ from the server's. Inductor also *sets* TORCHINDUCTOR_CACHE_DIR in os.environ the first time a test
# in the pytest process reaches its cache: were it not here, every later call of that pytest worker would start
# a plain, cold process (a test that runs a few sweeps took ~3x as long).
PER_CALL = ("SYNPRO_", "COLUMNS", "PYTEST_CURRENT_TEST", "PYTHONPATH", "TORCHINDUCTOR_CACHE_DIR")


# ---- the server (run as `python warm_cli.py SOCKET`) ---------------------------------------------------

def serve(path: str) -> None:
    """Import the libraries, then fork a child per request until the pytest worker that started it is gone."""
    import importlib
    import select

    import matplotlib

    matplotlib.use("Agg")  # as synpro.plots does, before pyplot
    started = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    imports_set = {k: v for k, v in os.environ.items() if started.get(k) != v and not _per_call(k)}
    gc.freeze()  # the imported objects stay out of the children's collections: no pass writes to their pages
    if threading.active_count() != 1:  # forking beside another thread could copy a held lock
        sys.exit(f"warm_cli: {threading.active_count()} threads after the imports; refusing to fork")
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    print("ready", json.dumps(imports_set), flush=True)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection its exit status goes to
    while os.getppid() == parent:
        if select.select([listener], [], [], 0.05)[0]:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in waiting.values():
                    other.close()
                _child(json.loads(message), fds, conn)
                return  # unreachable: the child exits in _child
            for fd in fds:
                os.close(fd)
            conn.send(str(pid).encode())
            waiting[pid] = conn
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):  # a caller that stopped listening
                    conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()


def _child(request: dict, fds: list[int], conn: socket.socket) -> None:
    """Become `python -m cli ARGS` in the request's directory, environment and stdio, and exit as it would."""
    import runpy

    conn.close()
    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    os.chdir(request["cwd"])
    theirs = set(_pythonpath(os.environ))  # the server's
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["-m", *request["args"]]
    # What `python -m` puts first, then the call's PYTHONPATH in place of the server's.
    ours = _pythonpath(os.environ)
    sys.path[:] = [os.getcwd(), *ours, *(p for p in sys.path[1:] if p not in theirs and p not in ours)]
    try:
        runpy.run_module("cli", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = None
    except BaseException:  # noqa: BLE001 - reported as the interpreter reports it
        sys.excepthook(*sys.exc_info())
        code = 1
    # Leave as an interpreter does, but without tearing down every module the server imported (seconds, and
    # it would write to, and so copy, most of the server's memory): atexit handlers, flushed stdio, the code.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code is None:  # an uncaught Ctrl-C ends a Python process by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _exit_code(code: object) -> int:
    """The status an interpreter exits with for `sys.exit(code)`: None is 0, other objects are printed and 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


# ---- the client ------------------------------------------------------------------------------------------

# The process, its socket, the environment it started with and what its imports set in it (both without PER_CALL).
_server: tuple[subprocess.Popen, str, dict[str, str], dict[str, str]] | None = None


def _per_call(name: str) -> bool:
    return name.startswith(PER_CALL)


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _warm(argv: list[str], env: dict[str, str] | None) -> tuple[str, list[str]] | None:
    """The server's socket and the CLI's arguments when this call can be forked, else None."""
    global _server
    if os.environ.get("SYNPRO_TEST_PLAIN_PROCESSES") or list(argv[:3]) != [sys.executable, "-m", "cli"]:
        return None
    if _server is None or _server[0].poll() is not None:
        folder = tempfile.mkdtemp(prefix="warm-cli-")
        atexit.register(shutil.rmtree, folder, True)
        path = str(Path(folder) / "socket")
        proc = subprocess.Popen([sys.executable, __file__, path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                text=True)
        word, _, imports_set = proc.stdout.readline().partition(" ")
        if word != "ready":
            proc.kill()
            return None
        atexit.register(proc.kill)
        _server = proc, path, {k: v for k, v in os.environ.items() if not _per_call(k)}, json.loads(imports_set)
    mine = {k: v for k, v in (os.environ if env is None else env).items() if not _per_call(k)}
    _, path, started, imports_set = _server
    differ = sorted(k for k in mine.keys() | started.keys()
                    if mine.get(k) != started.get(k) and not (k in imports_set and mine.get(k) == imports_set[k]))
    drifted = [k for k in differ if mine.get(k) == os.environ.get(k)]
    if drifted:  # not the caller's choice: this process's own environment moved, and the suite slows down
        warnings.warn(f"warm_cli: {', '.join(drifted)} changed in this pytest process after its warm server "
                      "started, so this call starts a cold process (add what is read only at run time to PER_CALL)",
                      stacklevel=3)
    return None if differ else (path, list(argv[3:]))


class WarmProcess:
    """The parts of `subprocess.Popen` the tests use, for a child of the warm server."""

    def __init__(self, argv: list[str], path: str, args: list[str], *, cwd: Any = None, env: dict | None = None,
                 stdout: Any = None, stderr: Any = None, text: bool = False, start_new_session: bool = False):
        self.args, self.returncode = argv, None
        self.stdout = self.stderr = None
        mine, theirs = [], []  # our ends of pipes, the fds the child gets
        null = os.open(os.devnull, os.O_RDWR)
        out = self._fd(stdout, null, 1, mine, theirs)
        err = out if stderr == subprocess.STDOUT else self._fd(stderr, null, 2, mine, theirs)
        if stdout == subprocess.PIPE:
            self.stdout = open(mine[0], "r" if text else "rb")
        if stderr == subprocess.PIPE:
            self.stderr = open(mine[-1], "r" if text else "rb")
        request = {"args": args, "cwd": str(cwd or os.getcwd()), "env": dict(os.environ if env is None else env),
                   "new_session": start_new_session}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._conn.connect(path)
        socket.send_fds(self._conn, [json.dumps(request).encode()], [null, out, err])
        for fd in {null, *theirs}:
            os.close(fd)
        self.pid = int(self._conn.recv(64))

    @staticmethod
    def _fd(how: Any, null: int, inherit: int, mine: list[int], theirs: list[int]) -> int:
        if how is None:
            return inherit
        if how == subprocess.DEVNULL:
            return null
        if how == subprocess.PIPE:
            read, write = os.pipe()
            mine.append(read)
            theirs.append(write)
            return write
        return how if isinstance(how, int) else how.fileno()

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                status = self._conn.recv(64)
            except (TimeoutError, BlockingIOError):
                return None
            if not status:
                raise RuntimeError(f"the warm CLI server died before pid {self.pid} ended")
            self.returncode = int(status)
            self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        if self._status(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        read: dict[str, Any] = {}
        readers = [threading.Thread(target=lambda n=n, f=f: read.__setitem__(n, f.read()), daemon=True)
                   for n, f in (("out", self.stdout), ("err", self.stderr)) if f is not None]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(timeout)
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        return read.get("out"), read.get("err")

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> "WarmProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.wait()


def Popen(argv: list[str], *, default_sigint: bool = False, **kwargs: Any) -> WarmProcess | subprocess.Popen:  # noqa: N802
    """`subprocess.Popen(argv, **kwargs)`, forked from the warm server where it can be. A forked child always
    has Python's own SIGINT handler; `default_sigint` gives a plain subprocess the same, even where this
    process ignores SIGINT (a runner started in the background) and a child would inherit that."""
    warm = _warm(argv, kwargs.get("env"))
    if warm:
        return WarmProcess(argv, *warm, **kwargs)
    if default_sigint:
        kwargs["preexec_fn"] = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    return subprocess.Popen(argv, **kwargs)


def run(argv: list[str], *, timeout: float | None = None, capture_output: bool = False, text: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, ...)`, forked from the warm server where it can be."""
    warm = _warm(argv, kwargs.get("env"))
    if not warm:
        return subprocess.run(argv, timeout=timeout, capture_output=capture_output, text=text, **kwargs)
    if capture_output:  # files, not pipes: nothing to drain while waiting
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = WarmProcess(argv, *warm, stdout=out, stderr=err, **kwargs)
            _wait_or_kill(proc, timeout)
            texts = []
            for f in (out, err):
                f.seek(0)
                texts.append(f.read().decode() if text else f.read())
            return subprocess.CompletedProcess(argv, proc.returncode, *texts)
    proc = WarmProcess(argv, *warm, **kwargs)
    _wait_or_kill(proc, timeout)
    return subprocess.CompletedProcess(argv, proc.returncode)


def _wait_or_kill(proc: WarmProcess, timeout: float | None) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


if __name__ == "__main__":
    serve(sys.argv[1])
