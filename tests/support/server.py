"""Start a real ``monailabel start_server`` with GazeRad's app on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def run_threads(target, n: int) -> float:
    """Run ``target(k)`` for k in ``range(n)`` in ``n`` threads at once; the wall time in seconds."""
    import threading

    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def killed_process_folder(root: Path, prefix: str) -> Path:
    """A :class:`gazerad.io.scratch.ScratchFolder` with a half-written upload in it, made by a
    process that then dies by SIGKILL (what a server killed mid-request leaves)."""
    code = (
        "import os, sys\n"
        "from gazerad.io.scratch import ScratchFolder\n"
        "p = ScratchFolder(sys.argv[1], sys.argv[2]).path()\n"
        "(p / 'up-half').write_bytes(b'x' * 1000)\n"
        "print(p, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(root), prefix], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    return Path(r.stdout.strip())


class Server:
    """A MONAI Label server process with a private copy of the app (its own ``model/``)."""

    def __init__(self, studies: Path, workdir: Path, conf: dict[str, str] | None = None, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.app = workdir / "app"
        if not self.app.exists():
            shutil.copytree(REPO / "monailabel_app", self.app, ignore=shutil.ignore_patterns("model", "__pycache__"))
        (self.app / "model").mkdir(exist_ok=True)
        self.studies = studies
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        self.conf = conf or {}
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def model_dir(self) -> Path:
        return self.app / "model"

    def start(self, timeout: float = 180.0) -> "Server":
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env.setdefault("MONAI_LABEL_SESSION_PATH", str(self.app.parent / "sessions"))
        env.update(self.env)
        cmd = [
            str(Path(sys.executable).parent / "monailabel"),
            "start_server",
            "--app",
            str(self.app),
            "--studies",
            str(self.studies),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        for k, v in self.conf.items():
            cmd += ["--conf", k, v]
        self._fh = self.log.open("a")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if requests.get(self.url + "/info/", timeout=5, headers=headers).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log.read_text()[-4000:]}")

    @property
    def token(self) -> str | None:
        f = self.env.get("GAZERAD_AUTH_TOKEN_FILE")
        return Path(f).read_text().strip() if f else self.env.get("GAZERAD_AUTH_TOKEN")

    def kill(self) -> None:
        """SIGKILL the whole server (training subprocesses included): a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if getattr(self, "_fh", None):
            self._fh.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_fh", None):
            self._fh.close()

    def train(self, model: str, params: dict, timeout: float = 600.0) -> dict:
        """POST /train/<model>, wait for the task to end; returns the final task status."""
        r = requests.post(f"{self.url}/train/{model}", json=params, timeout=30)
        r.raise_for_status()
        task_id = r.json()["id"]
        t0 = time.time()
        while time.time() - t0 < timeout:
            st = requests.get(f"{self.url}/train/", params={"all": True}, timeout=10).json()
            mine = [t for t in st if t["id"] == task_id] if isinstance(st, list) else [st]
            if mine and mine[0]["status"] in ("DONE", "ERROR", "STOPPED"):
                return mine[0]
            time.sleep(1.0)
        raise TimeoutError(f"training {model} did not finish in {timeout} s")
