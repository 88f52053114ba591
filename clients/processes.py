"""Start and stop real krakod / agentd processes (used by the demo, integration tests and benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def _command(name: str) -> list[str]:
    """Prefer the installed console script; fall back to `python -m` in this interpreter."""
    exe = shutil.which(name)
    if exe is not None:
        return [exe]
    return [sys.executable, "-m", {"krakod": "krakod.main", "agentd": "agentd.main"}[name]]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait (bounded), then SIGKILL. Returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (crash tests)."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=STOP_TIMEOUT_S)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Krakod(Proc):
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def wait_serving(address: str, deadline: float) -> None:
    channel = grpc.insecure_channel(address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"krakod at {address} did not become SERVING")
            time.sleep(0.05)
    finally:
        channel.close()


def start_krakod(
    data_dir: Path, *args: str, port: int = 0, log_dir: Path | None = None, env: dict[str, str] | None = None
) -> Krakod:
    """Start krakod on 127.0.0.1:port (0: a free port), wait until it is SERVING, return the handle."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(log_dir or data_dir)
    port_file = data_dir / "krakod.port"
    port_file.unlink(missing_ok=True)
    log_path = log_dir / "krakod.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            [
                *_command("krakod"),
                "--data-dir",
                str(data_dir),
                "--listen",
                f"127.0.0.1:{port}",
                "--port-file",
                str(port_file),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    proc = Krakod("krakod", popen, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if popen.poll() is not None:
            raise RuntimeError(f"krakod exited with {popen.returncode}:\n{proc.output()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"krakod did not start:\n{proc.output()}")
        time.sleep(0.02)
    proc.port = int(port_file.read_text())
    wait_serving(proc.address, deadline)
    return proc


def start_agentd(
    server: str,
    node_id: str,
    state_dir: Path,
    *args: str,
    kinds: str = "cpu",
    concurrency: int = 4,
    region: str = "local",
    env: dict[str, str] | None = None,
) -> Proc:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "agentd.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            [
                *_command("agentd"),
                "--server",
                server,
                "--node-id",
                node_id,
                "--region",
                region,
                "--kinds",
                kinds,
                "--concurrency",
                str(concurrency),
                "--state-dir",
                str(state_dir),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return Proc(f"agentd:{node_id}", popen, log_path)
