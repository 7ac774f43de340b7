"""A real, headless ComfyUI server with this pack installed, and a small client for its HTTP/websocket API.

The server is the selected ComfyUI tree's own ``main.py`` (``devkit.comfy_env``: 0.3.75 or 0.33.0) with a page
frontend unpacked by ``scripts/setup_env.sh`` (``--front-end-root``; by default the one that tree pins), started
as a child process on CPU (``--cpu``), bound to 127.0.0.1 on a free port, with a private base
directory (``--base-directory``: models, input, output, temp, user, custom_nodes) in which the pack is a
symlink ``custom_nodes/ComfyUI-ClusCa`` -> this repository. The database is in memory; API nodes are off
(the page then makes no requests outside the machine).

The child runs in its own process group and is stopped (SIGTERM, then SIGKILL) by :meth:`ComfyServer.stop`,
by the context manager on any error or Ctrl-C, and by the kernel if this process dies first
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .comfy_env import COMFY_DIR, REPO, frontend_root

PACK_NAME = "ComfyUI-ClusCa"
HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """The server did not start, died, or refused or failed a prompt; the message carries the details."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent():  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ComfyServer:
    """``with ComfyServer(base) as srv: srv.url ...`` — start, wait until it answers, always stop."""

    def __init__(self, base_dir, port: Optional[int] = None, extra_args=(), startup_timeout: float = 240.0,
                 python: Optional[str] = None, extra_custom_nodes=(), settings: Optional[dict] = None,
                 pack_dir=None, frontend: Optional[str] = None):
        self.base = Path(base_dir).resolve()
        self.pack_dir = Path(pack_dir).resolve() if pack_dir else REPO
        self.extra_custom_nodes = [Path(p).resolve() for p in extra_custom_nodes]
        self.settings = settings
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.python = python or sys.executable
        #: the page frontend's folder (``frontend`` = a version from .comfyui/frontends; None = the pinned one)
        self.frontend_root = frontend_root(frontend)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.base / "server.log"
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def prepare(self) -> None:
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        for name, target in [(PACK_NAME, self.pack_dir)] + [(p.name, p) for p in self.extra_custom_nodes]:
            link = self.base / "custom_nodes" / name
            if link.is_symlink() and Path(os.readlink(link)) != target:
                link.unlink()
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        if self.settings is not None:
            # the page's settings of the default user (e.g. no first-run template dialog)
            user = self.base / "user" / "default"
            user.mkdir(parents=True, exist_ok=True)
            (user / "comfy.settings.json").write_text(json.dumps(self.settings, indent=1), encoding="utf-8")

    def command(self) -> list:
        return [self.python, str(COMFY_DIR / "main.py"), "--cpu", "--listen", HOST, "--port", str(self.port),
                "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
                "--disable-auto-launch", "--disable-api-nodes", "--log-stdout",
                "--front-end-root", str(self.frontend_root), *self.extra_args]

    def start(self) -> "ComfyServer":
        if not (COMFY_DIR / "main.py").exists():
            raise ServerError(f"ComfyUI not found at {COMFY_DIR}; run scripts/setup_env.sh first")
        self.prepare()
        self._log = open(self.log_path, "w", encoding="utf-8")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", "2")
        self.proc = subprocess.Popen(self.command(), cwd=str(COMFY_DIR), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.5)
        raise ServerError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- plain HTTP ---------------------------------------------------------------------------------
    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))

    def get_bytes(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=120)

    def set_setting(self, setting_id: str, value, timeout: float = 30) -> None:
        """Store one of the page's settings for the default user (``POST /settings/<id>``, ComfyUI's own
        route); a page opened afterwards starts with it."""
        req = urllib.request.Request(self.url + "/settings/" + urllib.parse.quote(setting_id),
                                     data=json.dumps(value).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if r.status != 200:
                raise ServerError(f"setting {setting_id} was refused ({r.status})")


@dataclass
class RunRecord:
    """What the websocket said about one prompt."""

    prompt_id: str
    events: list = field(default_factory=list)        # (seconds since queueing, type, data)
    stats: list = field(default_factory=list)         # data of the "clusca.stats" messages
    outputs: dict = field(default_factory=dict)       # node id -> "executed" output (images, ...)
    node_seconds: dict = field(default_factory=dict)  # node id -> seconds from its start to the next event
    executed: list = field(default_factory=list)      # node ids in execution order
    cached: list = field(default_factory=list)
    seconds: float = 0.0                              # execution_start -> execution_success

    def images(self, node_id: str) -> list:
        return list((self.outputs.get(str(node_id)) or {}).get("images") or [])


class ComfyClient:
    """One websocket client of a :class:`ComfyServer` (use inside ``async with``)."""

    def __init__(self, server: ComfyServer):
        self.server = server
        self.client_id = uuid.uuid4().hex
        self._session = None
        self._ws = None

    async def __aenter__(self) -> "ComfyClient":
        import aiohttp
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(f"ws://{HOST}:{self.server.port}/ws?clientId={self.client_id}",
                                                  max_msg_size=0)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def queue(self, prompt: dict) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        async with self._session.post(self.server.url + "/prompt", json=body) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise ServerError(f"the server refused the prompt ({r.status}): {json.dumps(data, indent=1)[:4000]}")
        return data["prompt_id"]

    async def wait(self, prompt_id: str, timeout: float = 600) -> RunRecord:
        """Read the websocket until the prompt succeeds (RunRecord) or fails (ServerError)."""
        import aiohttp
        rec = RunRecord(prompt_id)
        t0 = time.monotonic()
        started = current = None
        deadline = t0 + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            msg = await self._ws.receive(timeout=remaining)
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                raise ServerError(f"the websocket closed while waiting for {prompt_id}:\n{self.server.log_tail()}")
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue  # binary previews
            m = json.loads(msg.data)
            typ, data = m.get("type"), m.get("data") or {}
            if isinstance(data, dict) and data.get("prompt_id") not in (None, prompt_id):
                continue
            now = time.monotonic() - t0
            rec.events.append((now, typ, data))
            if typ == "execution_start":
                started = now
            elif typ == "execution_cached":
                rec.cached = [str(n) for n in data.get("nodes") or []]
            elif typ == "executing":
                if current is not None:
                    rec.node_seconds[current[0]] = now - current[1]
                node = data.get("node")
                current = (str(node), now) if node is not None else None
                if node is not None:
                    rec.executed.append(str(node))
            elif typ == "executed":
                rec.outputs[str(data.get("node"))] = data.get("output") or {}
            elif typ == "clusca.stats":
                rec.stats.append(data)
            elif typ == "execution_error":
                raise ServerError(f"prompt failed in node {data.get('node_id')} ({data.get('node_type')}): "
                                  f"{data.get('exception_type')}: {data.get('exception_message')}")
            elif typ == "execution_interrupted":
                raise ServerError(f"prompt {prompt_id} was interrupted")
            elif typ == "execution_success":
                if current is not None:
                    rec.node_seconds[current[0]] = now - current[1]
                rec.seconds = now - (started if started is not None else 0.0)
                return rec

    async def run(self, prompt: dict, timeout: float = 600) -> RunRecord:
        return await self.wait(await self.queue(prompt), timeout)

    def image_path(self, image: dict) -> Path:
        """Where the server wrote an image of an "executed" output (``type`` output or temp)."""
        root = self.server.base / ("output" if image.get("type") == "output" else image.get("type", "output"))
        return root / (image.get("subfolder") or "") / image["filename"]


def run_prompts(server: ComfyServer, prompts: list, timeout: float = 600) -> list:
    """Queue prompts one after the other on one websocket client; their RunRecords."""
    async def go():
        async with ComfyClient(server) as client:
            return [await client.run(p, timeout) for p in prompts]
    return asyncio.run(go())
