"""The `krakod` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from krakod.budgets import BudgetConfig
from krakod.capacity import CapacityConfig
from krakod.config import DEFAULT_LISTEN, CapacityOptions, Config, ConfigError, Timing, load_auth
from krakod.log import DataDirLocked, LogError
from krakod.scheduler import PlacementConfig, ScoreWeights
from krakod.server import Daemon, run_until_signalled

DEFAULT_TIMING = Timing()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="krakod", description="Krako daemon: event log, scheduler and gRPC services.")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KRAKO_DATA_DIR", "krako-data")))
    p.add_argument("--listen", default=os.environ.get("KRAKO_LISTEN", DEFAULT_LISTEN), help="HOST:PORT (port 0: any)")
    p.add_argument("--agent-token", action="append", default=[], help="agent join token (repeatable)")
    p.add_argument("--tenant-key", action="append", default=[], help="tenant API key as KEY=TENANT (repeatable)")
    p.add_argument("--admin-token", action="append", default=[], help="admin token (repeatable)")
    p.add_argument("--auth-file", type=Path, help="JSON file with agent_tokens, tenant_keys, admin_tokens")
    p.add_argument("--allow-unauthenticated", action="store_true", help="serve a non-loopback address with no tokens")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--synchronous", default="FULL", choices=["NORMAL", "FULL", "EXTRA"], help="SQLite synchronous")
    p.add_argument("--heartbeat-interval-ms", type=int, default=DEFAULT_TIMING.heartbeat_interval_ms)
    p.add_argument("--lease-ms", type=int, default=DEFAULT_TIMING.lease_ms)
    p.add_argument("--node-ttl-ms", type=int, default=DEFAULT_TIMING.node_ttl_ms)
    p.add_argument("--dispatch-timeout-ms", type=int, default=DEFAULT_TIMING.dispatch_timeout_ms)
    p.add_argument("--multi-agent-fanout", type=int, default=1, help="offer each unit to this many agents at once")
    p.add_argument("--handler", action="append", default=[], help="extra cpu handler name to accept (repeatable)")
    p.add_argument("--capacity-window-s", type=float, default=10.0, help="autoscaling controller window")
    p.add_argument("--capacity-cooldown-up-s", type=float, default=60.0)
    p.add_argument("--capacity-cooldown-down-s", type=float, default=180.0)
    p.add_argument("--replicas-min", type=int, default=1)
    p.add_argument("--replicas-max", type=int, default=10)
    p.add_argument("--queue-max", type=int, default=1000, help="Q_max of admission control")
    p.add_argument(
        "--simulate-pressure", choices=["none", "low", "high", "critical", "auto"], help="simulated metrics (demo)"
    )
    p.add_argument("--scale-exec", metavar="CMD", help="run CMD with the target replica count on each scale request")
    p.add_argument("--autoscale-local-agents", action="store_true", help="start/stop agentd processes on this host")
    p.add_argument("--autoscale-kinds", default="cpu")
    p.add_argument("--credit-limit-usd", default="10.000000", help="LLM spend allowed per tenant before top-ups")
    p.add_argument("--session-max-tokens", type=int, default=0, help="0: unlimited")
    p.add_argument("--session-max-llm-invocations", type=int, default=0, help="0: unlimited")
    p.add_argument("--session-max-cost-usd", default="0", help="0: unlimited")
    p.add_argument("--unit-max-tokens", type=int, default=0, help="cap on a unit's max_tokens; 0: unlimited")
    p.add_argument(
        "--placement-weights",
        default="0.35,0.30,0.25,0.10",
        metavar="C,L,T,R",
        help="score weights of capacity headroom, inverse load, trust, region affinity (must sum to 1)",
    )
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving (for tools and tests)")
    p.add_argument("--log-level", default=os.environ.get("KRAKO_LOG_LEVEL", "INFO"))
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    auth = load_auth(
        agent_tokens=args.agent_token,
        tenant_keys=args.tenant_key,
        admin_tokens=args.admin_token,
        auth_file=args.auth_file,
    )
    return Config(
        data_dir=args.data_dir,
        listen=args.listen,
        synchronous=args.synchronous,
        auth=auth,
        allow_unauthenticated=args.allow_unauthenticated,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        timing=Timing(
            heartbeat_interval_ms=args.heartbeat_interval_ms,
            lease_ms=args.lease_ms,
            node_ttl_ms=args.node_ttl_ms,
            dispatch_timeout_ms=args.dispatch_timeout_ms,
        ),
        extra_handlers=frozenset(args.handler),
        placement=PlacementConfig(weights=parse_weights(args.placement_weights)),
        budget=BudgetConfig.from_env(
            credit_limit_usd=parse_usd(args.credit_limit_usd, "--credit-limit-usd"),
            session_max_tokens=args.session_max_tokens,
            session_max_llm_invocations=args.session_max_llm_invocations,
            session_max_cost_usd=parse_usd(args.session_max_cost_usd, "--session-max-cost-usd"),
            unit_max_tokens=args.unit_max_tokens,
        ),
        capacity=CapacityOptions(
            controller=CapacityConfig(
                window_s=args.capacity_window_s,
                cooldown_after_scale_up_s=args.capacity_cooldown_up_s,
                cooldown_after_scale_down_s=args.capacity_cooldown_down_s,
                replicas_min=args.replicas_min,
                replicas_max=args.replicas_max,
                queue_max=args.queue_max,
            ),
            simulate_pressure=args.simulate_pressure,
            scale_exec=args.scale_exec,
            autoscale_local_agents=args.autoscale_local_agents,
            autoscale_kinds=args.autoscale_kinds,
        ),
        multi_agent_fanout=args.multi_agent_fanout,
    )


def parse_weights(text: str) -> ScoreWeights:
    try:
        capacity, load, trust, region = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--placement-weights takes four numbers C,L,T,R, got {text!r}") from None
    try:
        return ScoreWeights(capacity=capacity, load=load, trust=trust, region=region)
    except ValueError as exc:
        raise ConfigError(f"--placement-weights: {exc}") from None


def parse_usd(text: str, flag: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{flag} must be a decimal amount, got {text!r}") from None


async def _run(config: Config, port_file: Path | None) -> None:
    daemon = Daemon(config)
    ready = asyncio.Event()

    async def announce() -> None:
        await ready.wait()
        if port_file is not None:
            tmp = port_file.with_suffix(".tmp")
            tmp.write_text(str(daemon.port))
            tmp.replace(port_file)
        print(f"krakod listening on {config.listen.rpartition(':')[0]}:{daemon.port}", file=sys.stderr, flush=True)

    announcer = asyncio.create_task(announce())
    try:
        await run_until_signalled(daemon, ready)
    finally:
        announcer.cancel()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = config_from_args(args)
        config.validate()
        asyncio.run(_run(config, args.port_file))
    except (ConfigError, DataDirLocked, ValueError) as exc:
        print(f"krakod: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except LogError as exc:
        print(f"krakod: event log error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
