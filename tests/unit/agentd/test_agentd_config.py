"""The command line, the state dir and the persisted node id."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from agentd.config import AgentConfig, persistent_node_id
from agentd.main import build_config, build_parser, main


def config_from(argv: list[str]) -> AgentConfig:
    return build_config(build_parser().parse_args(argv))


def test_the_node_id_is_created_once_and_kept_across_restarts(tmp_path: Path) -> None:
    first = persistent_node_id(tmp_path / "state")
    assert first == persistent_node_id(tmp_path / "state")
    assert first != persistent_node_id(tmp_path / "other-state")
    assert first.startswith("agent-")


def test_without_node_id_the_cli_uses_the_persisted_one(tmp_path: Path) -> None:
    argv = ["--server", "127.0.0.1:7420", "--state-dir", str(tmp_path)]
    assert config_from(argv).node_id == config_from(argv).node_id == (tmp_path / "node_id").read_text().strip()


def test_the_state_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKO_AGENT_STATE_DIR", str(tmp_path / "from-env"))
    config = config_from(["--node-id", "n-1"])
    assert config.state_dir == tmp_path / "from-env"
    assert config.outbox_path == tmp_path / "from-env" / "outbox-n-1.sqlite3"


def test_every_flag_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKO_AGENT_TOKEN", "token-from-env")
    monkeypatch.setenv("KRAKO_LLM_USD_PER_1K_TOKENS", "0.004000")
    monkeypatch.setenv("KRAKO_LLM_TIER_MODELS", "small=tiny-model")
    monkeypatch.setenv("KRAKO_LOGGING_MODE", "debug")
    config = config_from(
        [
            "--server", "krakod.internal:7420", "--node-id", "gpu-7", "--region", "eu-west",
            "--kinds", "cpu,llm_pod", "--concurrency", "6", "--state-dir", str(tmp_path),
            "--handlers", "pkg.a", "pkg.b,pkg.c", "--llm-provider", "openai", "--llm-tiers", "small,large",
            "--llm-models", "m1,m2", "--llm-max-concurrency", "16", "--stability-class", "datacenter",
        ]
    )  # fmt: skip
    assert (config.server, config.node_id, config.region) == ("krakod.internal:7420", "gpu-7", "eu-west")
    assert (config.kinds, config.concurrency, config.token) == (("cpu", "llm_pod"), 6, "token-from-env")
    assert config.handler_modules == ("pkg.a", "pkg.b", "pkg.c")
    assert (config.llm.provider, config.llm.tiers, config.llm.models) == ("openai", ("small", "large"), ("m1", "m2"))
    assert (config.llm.max_concurrency, config.stability_class) == (16, "datacenter")
    assert config.llm.prices.default_usd_per_1k_tokens == Decimal("0.004000")
    assert config.llm.tier_models == {"small": "tiny-model"} and config.llm.log_prompts


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kinds", "gpu"], "kinds must be"),
        (["--concurrency", "0"], "concurrency must be at least 1"),
        (["--node-id", "has space"], "node id 'has space' is invalid"),
        (
            ["--handlers", "no_such_agentd_handler_module"],
            "cannot import handler module 'no_such_agentd_handler_module'",
        ),
        (["--server", "nohostport"], "server must be HOST:PORT"),
    ],
    ids=["an unknown kind", "zero concurrency", "a bad node id", "a missing handler module", "a server without port"],
)
def test_bad_configuration_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = ["--state-dir", str(tmp_path), "--node-id", "n-1", "--server", "127.0.0.1:1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
