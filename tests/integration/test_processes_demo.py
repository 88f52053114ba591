"""`krakoctl demo` end to end: real processes, the scenarios of the seed's e2e demo, and a clean exit.

Each scenario runs as a subprocess; the test parses the `--json` summary (the last line, {"summary": ...})
and checks that every unit completed exactly once and that the demo left no krakod or agentd behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

DEMO_TIMEOUT_S = 120


def krakoctl(*args: str) -> list[str]:
    exe = shutil.which("krakoctl")
    return [exe, *args] if exe else [sys.executable, "-m", "clients.krakoctl.main", *args]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(krakoctl(*args), capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"demo exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    docs = json_lines(result.stdout)
    assert "summary" in docs[-1], docs[-1]
    return docs[-1]["summary"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def assert_nothing_left_running(data_dir: Path) -> None:
    """No process mentions the demo's directory, and every pid in its lock files is gone."""
    pgrep = subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True, check=False)
    assert pgrep.stdout.strip() == "", f"demo processes still running:\n{pgrep.stdout}"
    pids = []
    for lock in data_dir.rglob("*.lock"):
        text = lock.read_text(errors="replace").strip()
        if text.isdigit():
            pids.append(int(text))
    assert any(data_dir.rglob("krakod.lock")), "the demo did not start krakod in its data dir"
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"pids from the demo's lock files are still alive: {alive}"


def test_cpu_burst_demo_completes_every_unit_and_exits_cleanly(tmp_path: Path):
    data_dir = tmp_path / "demo"
    result = run_demo("demo", "--reset", "--burst", "3", "--polls", "2", "--data-dir", str(data_dir))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "round 2/2: submitted 3, completed 3" in result.stdout, result.stdout
    assert "{'completed': 6}" in result.stdout, result.stdout  # the human summary's units line
    assert_nothing_left_running(data_dir)


def test_multi_agent_demo_offers_each_unit_to_several_agents_and_runs_it_once(tmp_path: Path):
    data_dir = tmp_path / "demo"
    burst, polls = 1, 2
    s = summary_of(
        run_demo(
            "--json",
            "demo",
            "--reset",
            "--burst",
            str(burst),
            "--polls",
            str(polls),
            "--multi-agent",
            "--data-dir",
            str(data_dir),
        )
    )
    assert s["units"] == {"completed": burst * polls}, s
    assert s["max_claims_per_unit"] == 1, s
    assert s["max_completions_per_unit"] == 1, s
    assert s["offers_per_unit"] > 1, s
    assert s["events"]["workunit.completed"] == burst * polls, s
    assert_nothing_left_running(data_dir)


def test_llm_demo_with_the_stub_provider_reports_its_invocations(tmp_path: Path):
    data_dir = tmp_path / "demo"
    result = run_demo(
        "--json",
        "demo",
        "--reset",
        "--kind",
        "llm_pod",
        "--polls",
        "2",
        "--llm-provider",
        "stub",
        "--data-dir",
        str(data_dir),
    )
    s = summary_of(result)
    rounds = [doc for doc in json_lines(result.stdout) if "round" in doc]
    assert [r["round"] for r in rounds] == [1, 2], rounds
    submitted = sum(int(r["message"].split("submitted ")[1].split(",")[0]) for r in rounds)
    assert s["units"] == {"completed": submitted}, s
    assert s["max_completions_per_unit"] == 1, s
    invocations = s["llm_invocations"]
    assert len(invocations) == submitted, invocations
    assert all(inv["total_tokens"] > 0 for inv in invocations), invocations
    assert all(inv["total_tokens"] == inv["tokens_in"] + inv["tokens_out"] for inv in invocations), invocations
    assert s["events"]["llm.invocation.completed"] == submitted, s
    assert_nothing_left_running(data_dir)


def test_demo_accepts_json_after_the_subcommand(tmp_path: Path):
    """DESIGN §5: every command takes --json; `krakoctl demo ... --json` is how the brief writes it."""
    data_dir = tmp_path / "demo"
    result = run_demo("demo", "--reset", "--burst", "1", "--polls", "1", "--data-dir", str(data_dir), "--json")
    s = summary_of(result)
    assert s["units"] == {"completed": 1}, s
    assert_nothing_left_running(data_dir)
