"""The command lines against real processes: krakoctl talking to a running krakod, and krakod refusing to start.

krakoctl runs as a subprocess exactly as a user or a script would run it; outputs are parsed as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from krako.v1 import events_pb2

from clients.client import KrakoClient
from clients.processes import Krakod, Proc, start_agentd, start_krakod

pytestmark = pytest.mark.slow

CLI_TIMEOUT_S = 60
NODE = "cli-agent"


def command(name: str, *args: str) -> list[str]:
    exe = shutil.which(name)
    module = {"krakoctl": "clients.krakoctl.main", "krakod": "krakod.main"}[name]
    return [exe, *args] if exe else [sys.executable, "-m", module, *args]


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(name, *args), capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def wait_registered(address: str, node_id: str, timeout_s: float = 30.0) -> None:
    with KrakoClient(address) as client:
        request = events_pb2.SubscribeEventsRequest(after_seq=0, types=["node.registered"])
        try:
            for batch in client.events.SubscribeEvents(request, timeout=timeout_s):
                if any(json.loads(e.payload_json).get("node_id") == node_id for e in batch.events):
                    return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        raise AssertionError(f"agent {node_id} did not register within {timeout_s} s")


@pytest.fixture
def krakod(tmp_path: Path) -> Iterator[Krakod]:
    proc = start_krakod(tmp_path / "krakod")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def agent(krakod: Krakod, tmp_path: Path) -> Iterator[Proc]:
    proc = start_agentd(krakod.address, NODE, tmp_path / "agent", concurrency=2)
    try:
        wait_registered(krakod.address, NODE)
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("json_position", ["before the command", "after the command"])
def test_submit_wait_prints_the_completed_unit_as_json(krakod: Krakod, agent: Proc, json_position: str):
    """DESIGN §5: every command takes --json; the brief writes it after the command (`submit ... --wait --json`)."""
    submit = ["submit", "--kind", "cpu", "--handler", "echo", "--input", '{"a":1}', "--wait"]
    if json_position == "before the command":
        args = ["--server", krakod.address, "--json", *submit]
    else:
        args = ["--server", krakod.address, *submit, "--json"]
    result = run("krakoctl", *args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["state"] == "completed", doc
    assert doc["output"] == {"a": 1}, doc
    assert doc["node_id"] == NODE, doc


def test_nodes_and_events_print_valid_json(krakod: Krakod, agent: Proc):
    result = run("krakoctl", "--server", krakod.address, "--json", "nodes")
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    assert [n["node_id"] for n in nodes] == [NODE], nodes
    assert nodes[0]["connected"] is True and nodes[0]["kinds"] == ["cpu"], nodes

    result = run("krakoctl", "--server", krakod.address, "--json", "events", "--limit", "5")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert 1 <= len(events) <= 5, result.stdout
    seqs = [int(e["seq"]) for e in events]
    assert seqs == sorted(seqs) and seqs[0] == 1, seqs
    assert all(e["type"] and isinstance(json.loads(e["payload_json"]), dict) for e in events), events

    result = run("krakoctl", "--server", krakod.address, "--json", "events", "--type", "node.registered")
    assert result.returncode == 0, result.stderr
    registered = [json.loads(line) for line in result.stdout.splitlines()]
    assert [json.loads(e["payload_json"])["node_id"] for e in registered] == [NODE], registered


def test_bad_submissions_exit_2_with_the_reason_and_append_nothing(krakod: Krakod):
    with KrakoClient(krakod.address) as client:
        before = client.read_events(after_seq=0, limit=1).last_seq

        result = run("krakoctl", "--server", krakod.address, "submit", "--kind", "gpu", "--handler", "echo")
        assert result.returncode == 2, result
        assert "invalid choice: 'gpu'" in result.stderr, result.stderr

        result = run("krakoctl", "--server", krakod.address, "submit", "--kind", "cpu", "--handler", "nope")
        assert result.returncode == 2, result
        assert "INVALID_ARGUMENT" in result.stderr and "nope" in result.stderr, result.stderr
        assert result.stdout == "", result.stdout

        after = client.read_events(after_seq=0, limit=1).last_seq
        appended = client.read_events(after_seq=before, limit=100).events
        assert after == before, [(e.seq, e.type) for e in appended]


def test_krakod_refuses_a_non_loopback_address_without_tokens(tmp_path: Path):
    result = run("krakod", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path / "open"))
    assert result.returncode != 0, result
    assert "--allow-unauthenticated" in result.stderr + result.stdout, result


def test_a_second_krakod_on_the_same_data_dir_refuses_to_start(krakod: Krakod, tmp_path: Path):
    result = run("krakod", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "krakod"))
    assert result.returncode != 0, result
    assert "in use by another krakod" in result.stderr + result.stdout, result
    assert krakod.alive(), "the first krakod must keep running"
    with KrakoClient(krakod.address) as client:
        assert client.read_events(after_seq=0, limit=1).last_seq >= 0
