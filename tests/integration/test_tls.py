"""Optional TLS: krakod serves TLS with --tls-cert/--tls-key, and clients and agents verify it with a CA file."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from clients.client import KrakoClient, KrakoError
from krakod.server import Daemon
from tests.conftest import make_config

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_a_tls_daemon_serves_clients_that_trust_its_certificate_and_refuses_plaintext(tmp_path, certificate):
    cert, key = certificate
    daemon = Daemon(dataclasses.replace(make_config(tmp_path / "data"), tls_cert=cert, tls_key=key))
    await daemon.start()
    address = f"127.0.0.1:{daemon.port}"

    def over_tls() -> None:  # the blocking client runs in a thread; the daemon serves on this loop
        with KrakoClient(address, tls_ca=cert, timeout_s=10) as client:
            response = client.submit(kind="cpu", handler="echo", input={"secure": True})
            assert client.get(response.work_unit_id).work_unit_id == response.work_unit_id
        with KrakoClient(address, timeout_s=5) as plaintext, pytest.raises(KrakoError) as info:
            plaintext.nodes()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE

    try:
        await asyncio.to_thread(over_tls)
    finally:
        await daemon.stop()


async def test_an_agent_joins_a_tls_daemon_with_its_ca_file(tmp_path, certificate):
    from clients.processes import start_agentd

    cert, key = certificate
    daemon = Daemon(dataclasses.replace(make_config(tmp_path / "data"), tls_cert=cert, tls_key=key))
    await daemon.start()
    agent = start_agentd(f"127.0.0.1:{daemon.port}", "tls-agent", tmp_path / "agent", "--tls-ca", str(cert))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "tls-agent" not in daemon.dispatcher.registry:
            assert agent.alive(), agent.output()
            assert asyncio.get_running_loop().time() < deadline, agent.output()
            await asyncio.sleep(0.05)  # poll with a deadline for the agent's hello
        assert daemon.dispatcher.registry["tls-agent"].connected
    finally:
        await asyncio.to_thread(agent.stop)
        await daemon.stop()
