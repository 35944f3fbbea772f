"""The HTTP service in a child process on a free loopback port, for tests and benchmarks
that must talk to it over real HTTP.

    >>> with SpanragServer(Path(".eval-data"), env={"SPANRAG_GENERATOR": "extractive"}) as server:  # doctest: +SKIP
    ...     httpx.get(f"{server.base_url}/healthz").json()
    {'status': 'ok'}

``start()`` runs ``uvicorn app.api:create_app --factory`` with ``SPANRAG_DATA_DIR`` and the
given ``SPANRAG_*`` variables (and one torch thread unless the environment says otherwise),
and returns once ``GET /readyz`` answers (models and indexes loaded); if the process exits first or does not answer in
time it raises ``ServerStartError`` with the command and the tail of its output.

``wait_until_ready`` is the polling loop itself, shared with other child servers (the
llama.cpp server of the tests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class ServerStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def answers_json(url: str, timeout_s: float = 2.0) -> dict | None:
    """The JSON object that ``GET url`` answers with status 200, else None (refused, reset,
    timed out, another status, not JSON yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.load(response)
            return body if response.status == 200 and isinstance(body, dict) else None
    except (OSError, ValueError):
        return None


def wait_until_ready(
    process: subprocess.Popen, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.1
) -> str | None:
    """Poll ``ready()`` until it holds; None when it did, else why not (the process exited,
    or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            return f"exited with code {process.returncode} before answering"
        if ready():
            return None
        if time.monotonic() > deadline:
            return f"did not answer within {timeout_s:.0f} s"
        time.sleep(poll_s)


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate ``process``, and kill it if it has not exited after ``grace_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ChildServer:
    """What every child server shares: its process, its captured output, stopping, and use
    as a context manager. Subclasses set ``_process`` and ``_log`` in ``start()``."""

    _process: subprocess.Popen | None
    _log: IO[bytes] | None

    def start(self):  # pragma: no cover - each server starts its own way
        raise NotImplementedError

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self, tail_chars: int = 4000) -> str:
        """The last ``tail_chars`` of what the server wrote (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-tail_chars:]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class SpanragServer(ChildServer):
    data_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)  # SPANRAG_* settings, on top of os.environ
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    cwd: Path | None = None  # the working directory (a .env there is read); None: this one
    access_log: bool = True
    startup_timeout_s: float = 120.0
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.api:create_app",
            "--factory",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        return cmd if self.access_log else [*cmd, "--no-access-log"]

    def start(self) -> SpanragServer:
        if self._process is not None:
            raise ServerStartError("server already started")
        if not self.port:
            self.port = free_port(self.host)
        env = {
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **os.environ,
            "SPANRAG_DATA_DIR": str(self.data_dir),
            **self.env,
        }
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            self.command(), cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        failed = wait_until_ready(
            self._process, lambda: answers_json(f"{self.base_url}/readyz") is not None, self.startup_timeout_s
        )
        if failed:
            output = self.output()
            self.stop()
            raise ServerStartError(
                f"spanrag server {failed}\ncommand: {' '.join(self.command())}\noutput (tail):\n{output}"
            )
        return self
