"""The Node.js client (clients/node) speaks krako.v1 from the .proto files: the contract is language-neutral."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.support.scripted_agent import ScriptedAgent

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").exists(),
    reason="needs node and `npm ci --prefix clients/node` (.ci/run installs both)",
)


async def node(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_CLIENT / "cli.js"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_node_client_submits_waits_and_reads_the_log(daemon):
    address = f"127.0.0.1:{daemon.port}"
    agent = ScriptedAgent(address, "node-peer")
    await agent.start()
    code, out, err = await node("--server", address, "submit", "echo", '{"from": "node"}', "node-key-1")
    assert code == 0, err
    unit = json.loads(out)
    assert unit["state"] == "WORK_UNIT_STATE_COMPLETED" and json.loads(unit["output_json"]) == {"from": "node"}
    code, out, _ = await node("--server", address, "events", "0")
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert "workunit.submitted" in types and "workunit.completed" in types
    await agent.close()


async def test_the_node_client_gets_the_same_clear_error_for_bad_input(daemon):
    before = daemon.log.last_seq
    code, _, err = await node("--server", f"127.0.0.1:{daemon.port}", "submit", "no_such_handler", "{}")
    assert code == 2 and "code 3" in err and "unknown handler 'no_such_handler'" in err  # 3 = INVALID_ARGUMENT
    assert daemon.log.last_seq == before
