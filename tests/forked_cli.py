"""Command lines run as a user types them, each in a child forked from one warm interpreter.

The user-error tests run ~60 command lines that each stop before any work (a typo, a bad path,
a bad value: one line, exit status 2). As plain subprocesses every one of them pays Python's
start and the import of jax, flax and the package (~2.6 s on the CI machine) for a check that
takes milliseconds. Here one server process per test worker imports those libraries once,
never touches a jax backend, and forks a fresh child per command line. The child runs the
command's entry point exactly as `python -m MODULE ARGS` or `python SCRIPT ARGS` would
(`runpy`, its own `sys.argv`, `sys.path[0]` and working directory, its stdout / stderr in
files, an uncaught exception printed as the interpreter prints it) and exits with the
command's status. Entry modules themselves are never imported by the server, so each child
defines its command's flags afresh.

Commands that do real work (training, export, the documented runs) stay plain subprocesses.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Libraries every clipjax command imports; importing them starts no Python thread and
# initialises no jax backend (a forked child of a multi-threaded process may deadlock).
WARM = ("numpy", "jax", "jax.numpy", "flax.linen", "optax", "ml_collections", "absl.app",
        "grain", "clipjax.cli", "clipjax.methods", "clipjax.train.loop", "clipjax.train.validate",
        "clipjax.evaluate.runner", "clipjax.evaluate.tasks", "clipjax.convert.load",
        "clipjax.convert.hf", "clipjax.convert.openclip", "clipjax.study.runner",
        "clipjax.study.report")


def _serve() -> None:
  """The server loop: one JSON request per stdin line, one JSON reply per stdout line."""
  import importlib
  import runpy
  import traceback
  for name in WARM:
    importlib.import_module(name)
  # No Python thread (multiprocessing's fork start method makes the same bet on the native
  # pools: OpenBLAS, started by numpy, re-initialises itself in a child through pthread_atfork).
  if threading.active_count() != 1:
    raise SystemExit(f"forked_cli: {threading.enumerate()} after the warm imports; cannot fork")
  replies = sys.stdout
  for line in sys.stdin:
    request = json.loads(line)
    replies.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the command's process
      code = 1
      try:
        os.chdir(request["cwd"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
          os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        argv = request["argv"]
        if argv[0] == "-m":
          sys.argv = [argv[1], *argv[2:]]
          sys.path[0] = request["cwd"]
          runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
          sys.argv = list(argv)
          sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
          runpy.run_path(argv[0], run_name="__main__")
        code = 0
      except SystemExit as e:  # as the interpreter does: int status, or print and exit 1
        if e.code is None or isinstance(e.code, int):
          code = e.code or 0
        else:
          print(e.code, file=sys.stderr)
      except BaseException:  # noqa: BLE001 - printed, as an uncaught exception would be
        traceback.print_exc()
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    deadline, status = time.monotonic() + request["timeout"], None
    while status is None:
      done, raw = os.waitpid(pid, os.WNOHANG)
      if done:
        status = os.waitstatus_to_exitcode(raw)
      elif time.monotonic() > deadline:  # a hang: the command is killed and reported
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = "timeout"
      else:
        time.sleep(0.01)
    replies.write(json.dumps({"returncode": status}) + "\n")
    replies.flush()


class ForkedCli:
  """`run(argv)` -> a CompletedProcess of `python *argv` (argv: ["-m", MODULE, ...] or
  [SCRIPT, ...]) in `env`, forked from a warm server started with that environment."""

  def __init__(self, env: dict[str, str]):
    self._env = env
    self._dir = tempfile.mkdtemp(prefix="forked-cli-")
    self._lock = threading.Lock()
    self._server = subprocess.Popen([sys.executable, __file__], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)

  def run(self, argv: list[str], cwd: str | Path, timeout: float = 120
          ) -> subprocess.CompletedProcess:
    out, err = os.path.join(self._dir, "stdout"), os.path.join(self._dir, "stderr")
    request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "stdout": out, "stderr": err,
               "timeout": timeout}
    with self._lock:
      self._server.stdin.write(json.dumps(request) + "\n")
      self._server.stdin.flush()
      line = self._server.stdout.readline()
      if not line:
        raise RuntimeError(f"the forked_cli server exited ({self._server.poll()})")
      code = json.loads(line)["returncode"]
      if code == "timeout":
        raise subprocess.TimeoutExpired([sys.executable, *argv], timeout,
                                        Path(out).read_text(), Path(err).read_text())
      return subprocess.CompletedProcess([sys.executable, *argv], code,
                                         Path(out).read_text(), Path(err).read_text())

  def close(self) -> None:
    self._server.stdin.close()
    self._server.wait(timeout=30)


if __name__ == "__main__":
  _serve()
