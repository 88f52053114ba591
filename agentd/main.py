"""The ``agentd`` command line.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when the daemon stayed
unreachable for ``--max-connect-attempts`` attempts or the outbox failed, 2 for a
configuration error (bad flag, handler module, refused token).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agentd.agent import Agent
from agentd.config import AGENT_VERSION, KINDS, STABILITY_CLASSES, AgentConfig, default_state_dir, persistent_node_id
from agentd.executors.llm import LlmSettings, PriceTable, parse_pairs
from agentd.executors.providers import PROVIDER_NAMES
from agentd.outbox import OutboxError
from agentd.registry import HandlerLoadError
from agentd.stream import AgentRejected, ConnectionGaveUp

logger = logging.getLogger("agentd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentd", description="Krako agent: runs work units for krakod.")
    parser.add_argument("--server", default=os.environ.get("KRAKO_SERVER", "127.0.0.1:7420"), help="krakod HOST:PORT")
    parser.add_argument("--node-id", help="default: an id generated once and kept in the state dir")
    parser.add_argument("--region", default="local")
    parser.add_argument("--kinds", default="cpu", help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1, help="cpu worker threads")
    parser.add_argument("--state-dir", type=Path, help="default: $KRAKO_AGENT_STATE_DIR or ~/.local/state/krako/agentd")
    parser.add_argument(
        "--handlers", action="extend", nargs="+", default=[], metavar="MODULE", help="modules with user handlers"
    )
    parser.add_argument("--token", default=os.environ.get("KRAKO_AGENT_TOKEN", ""), help="agent join token")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) to verify krakod; enables TLS")
    parser.add_argument("--llm-provider", default=os.environ.get("KRAKO_LLM_PROVIDER", "stub"), choices=PROVIDER_NAMES)
    parser.add_argument("--llm-tiers", default="small,medium,large")
    parser.add_argument("--llm-models", default="", help="models served (default: any the unit names)")
    parser.add_argument("--llm-max-concurrency", type=int, help="concurrent LLM requests (default: --concurrency)")
    parser.add_argument("--stability-class", default="community", choices=STABILITY_CLASSES)
    parser.add_argument("--shutdown-grace-s", type=float, default=10.0, help="how long running units may finish")
    parser.add_argument("--max-connect-attempts", type=int, help="give up after this many failures (default: never)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"agentd {AGENT_VERSION}")
    return parser


def build_config(arguments: argparse.Namespace) -> AgentConfig:
    """Turn parsed flags and the environment into a config; ValueError says what is wrong."""
    state_dir = (arguments.state_dir or default_state_dir()).expanduser()
    node_id = arguments.node_id or persistent_node_id(state_dir)
    llm = LlmSettings(
        provider=arguments.llm_provider,
        tiers=_csv(arguments.llm_tiers),
        models=_csv(arguments.llm_models),
        max_concurrency=arguments.llm_max_concurrency or arguments.concurrency,
        tier_models=parse_pairs(os.environ.get("KRAKO_LLM_TIER_MODELS", "")),
        prices=PriceTable.parse(
            os.environ.get("KRAKO_LLM_USD_PER_1K_TOKENS", "0.002000"), os.environ.get("KRAKO_LLM_MODEL_PRICES", "")
        ),
        log_prompts=os.environ.get("KRAKO_LOGGING_MODE", "").lower() == "debug",
    )
    handler_modules = tuple(name for entry in arguments.handlers for name in _csv(entry))
    return AgentConfig(
        server=arguments.server,
        node_id=node_id,
        state_dir=state_dir,
        region=arguments.region,
        kinds=_csv(arguments.kinds),
        concurrency=arguments.concurrency,
        handler_modules=handler_modules,
        token=arguments.token,
        tls_ca=arguments.tls_ca,
        stability_class=arguments.stability_class,
        llm=llm,
        shutdown_grace_s=arguments.shutdown_grace_s,
        max_connect_attempts=arguments.max_connect_attempts,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = build_config(arguments)
        if config.tls_ca is not None and not config.tls_ca.is_file():
            raise ValueError(f"--tls-ca {config.tls_ca} is not a readable file")
        agent = Agent(config)
    except (ValueError, OSError, HandlerLoadError) as error:
        parser.exit(2, f"agentd: error: {error}\n")
    return asyncio.run(_serve(agent))


async def _serve(agent: Agent) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_shutdown, agent, signum)
    try:
        await agent.run()
    except AgentRejected as error:
        logger.error("%s", error)
        return 2
    except (ConnectionGaveUp, OutboxError) as error:
        logger.error("%s", error)
        return 1
    return 0


_shutdown_tasks: set[asyncio.Task[None]] = set()


def _request_shutdown(agent: Agent, signum: int) -> None:
    logger.info("received %s; shutting down", signal.Signals(signum).name)
    task = asyncio.get_running_loop().create_task(agent.shutdown())
    _shutdown_tasks.add(task)  # keep a reference so the task is not collected mid-way
    task.add_done_callback(_shutdown_tasks.discard)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


if __name__ == "__main__":
    sys.exit(main())
