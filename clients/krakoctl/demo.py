"""`krakoctl demo`: the whole fabric on this machine, with no set-up.

Starts krakod on a free port with a fresh data dir under the working directory,
starts the agents the scenario needs (real agentd processes), submits work in
rounds, shows progress, prints a summary, and stops everything it started.
Flags follow the Krako 2.0 e2e demo: --reset --burst N --polls N --kind
--llm-provider --multi-agent --simulate-pressure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from clients.client import TERMINAL_STATES, KrakoClient, KrakoError, make_spec, state_name
from clients.processes import Proc, start_agentd, start_krakod

NODE_WAIT_S = 30.0
ROUND_WAIT_S = 120.0


def add_demo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("demo", help="run krakod and agents locally and drive a scenario", parents=[common])
    d.add_argument("--data-dir", type=Path, default=Path("krako-demo"), help="demo directory (default ./krako-demo)")
    d.add_argument("--reset", action="store_true", help="start from an empty data dir")
    d.add_argument("--burst", type=int, default=3, help="units submitted per round")
    d.add_argument("--polls", type=int, default=6, help="rounds: submit a burst, wait for it, report")
    d.add_argument("--kind", choices=["cpu", "llm_pod"], default="cpu")
    d.add_argument("--llm-provider", choices=["stub", "openai"], default="stub")
    d.add_argument("--multi-agent", action="store_true", help="offer every unit to 3 agents at once")
    d.add_argument("--simulate-pressure", choices=["none", "low", "high", "critical", "auto"], default="none")
    d.add_argument("--agents", type=int, default=0, help="number of agents (default: by scenario)")
    d.set_defaults(func=run_demo)


def say(args: argparse.Namespace, text: str, **fields: Any) -> None:
    if args.json:
        print(json.dumps({"message": text, **fields}, sort_keys=True), flush=True)
    else:
        print(text, flush=True)


PRESSURE_WINDOW_S = 0.5
PRESSURE_ROUND_S = 1.0  # two controller windows per demo round
PRIORITY_CYCLE = ("p0", "p1", "p2")


def round_specs(args: argparse.Namespace, round_no: int, run_id: str) -> list[Any]:
    specs = []
    for i in range(args.burst):
        key = f"demo-{run_id}-r{round_no}-u{i}"
        # Under simulated pressure the priorities vary, so admission control has something to shed.
        priority = PRIORITY_CYCLE[i % len(PRIORITY_CYCLE)] if args.simulate_pressure != "none" else "p2"
        if args.kind == "llm_pod":
            specs.append(
                make_spec(
                    kind="llm_pod",
                    input={"prompt": f"Summarise round {round_no} item {i}."},
                    tier="small",
                    max_tokens=64,
                    key=key,
                    tenant="demo",
                    session=f"demo-{run_id}",
                    idempotent=True,
                    priority=priority,
                )
            )
        else:
            specs.append(
                make_spec(
                    kind="cpu",
                    handler="burn_ms",
                    input={"ms": 25},
                    key=key,
                    tenant="demo",
                    session=f"demo-{run_id}",
                    idempotent=True,
                    priority=priority,
                )
            )
    return specs


def submit_round(client: KrakoClient, specs: list[Any]) -> tuple[list[str], list[str]]:
    """Submit one by one: admission control refuses by priority, so one refusal must not sink the rest."""
    admitted, refused = [], []
    for spec in specs:
        try:
            admitted.append(client.submit_many([spec])[0].work_unit_id)
        except KrakoError as exc:
            if exc.code.name != "RESOURCE_EXHAUSTED":
                raise
            refused.append(exc.message)
    return admitted, refused


def wait_terminal(client: KrakoClient, ids: list[str], after_seq: int) -> dict[str, str]:
    """Follow the log for terminal events of these units (no per-unit polling)."""
    wanted = set(ids)
    states: dict[str, str] = {}
    for uid in ids:  # some may already be terminal
        unit = client.get(uid)
        if unit.state in TERMINAL_STATES:
            states[uid] = state_name(unit.state)
    if len(states) == len(wanted):
        return states
    types = [
        "workunit.completed",
        "workunit.failed",
        "workunit.cancelled",
        "workunit.rejected",
        "workunit.retry.dropped",
        "workunit.claim.expired",
    ]
    deadline = time.monotonic() + ROUND_WAIT_S
    for event in client.subscribe(after_seq=after_seq, types=types):
        if event.work_unit_id in wanted and event.work_unit_id not in states:
            unit = client.get(event.work_unit_id)
            if unit.state in TERMINAL_STATES:
                states[event.work_unit_id] = state_name(unit.state)
        if len(states) == len(wanted) or time.monotonic() > deadline:
            break
    return states


def run_demo(args: argparse.Namespace) -> int:
    root = args.data_dir.resolve()
    if args.reset and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    procs: list[Proc] = []
    # SIGTERM (e.g. from `timeout`) must still stop the processes the demo started.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return _run(args, root, procs)
    except KeyboardInterrupt:
        print("krakoctl demo: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except (KrakoError, TimeoutError, RuntimeError) as exc:
        print(f"krakoctl demo: {exc}", file=sys.stderr)
        for proc in procs:
            if not proc.alive():
                print(f"--- {proc.name} exited; its output:\n{proc.output()[-3000:]}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()


def krakod_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--heartbeat-interval-ms", "500"]
    if args.multi_agent:
        flags += ["--multi-agent-fanout", "3"]
    if args.simulate_pressure != "none":
        # Short windows and cooldowns so a demo run shows the controller acting; the local actuator starts
        # and stops real agentd processes as the replica count R changes.
        flags += [
            "--simulate-pressure",
            args.simulate_pressure,
            "--capacity-window-s",
            str(PRESSURE_WINDOW_S),
            "--capacity-cooldown-up-s",
            "3",
            "--capacity-cooldown-down-s",
            "6",
            "--replicas-max",
            "4",
            "--autoscale-local-agents",
            "--autoscale-kinds",
            args.kind,
        ]
    return flags


def start_agents(args: argparse.Namespace, krakod: Any, root: Path, procs: list[Proc]) -> int:
    if args.simulate_pressure != "none":
        return 1  # krakod's local actuator starts R agents itself (R_min = 1)
    n_agents = args.agents or (3 if args.multi_agent else (1 if args.kind == "llm_pod" else 2))
    for i in range(n_agents):
        node_id = f"demo-{'llm' if args.kind == 'llm_pod' else 'cpu'}-{i + 1}"
        extra = ["--llm-provider", args.llm_provider] if args.kind == "llm_pod" else []
        procs.append(
            start_agentd(krakod.address, node_id, root / "agents" / node_id, *extra, kinds=args.kind, concurrency=4)
        )
    return n_agents


def _run(args: argparse.Namespace, root: Path, procs: list[Proc]) -> int:
    started = time.monotonic()
    env = {"KRAKO_LLM_PROVIDER": args.llm_provider}
    krakod = start_krakod(root / "krakod", *krakod_flags(args), env=env)
    procs.append(krakod)
    say(args, f"krakod serving on {krakod.address} (data dir {root / 'krakod'})", server=krakod.address)
    n_agents = start_agents(args, krakod, root, procs)
    with KrakoClient(krakod.address) as client:
        nodes = client.wait_for_nodes(n_agents, timeout_s=NODE_WAIT_S)
        say(args, f"{len(nodes)} agents connected: {', '.join(n.node_id for n in nodes)}")
        run_id = time.strftime("%Y%m%d%H%M%S")
        # The demo tenant's wallet gets a top-up, so the ledger has something to debit.
        client.credit("demo", "10.000000", key=f"demo-topup-{run_id}")
        all_ids: list[str] = []
        refusals = 0
        for round_no in range(1, args.polls + 1):
            round_started = time.monotonic()
            after = client.read_events(limit=1).last_seq
            ids, refused = submit_round(client, round_specs(args, round_no, run_id))
            all_ids.extend(ids)
            refusals += len(refused)
            done = Counter(wait_terminal(client, ids, after).values())
            line = f"round {round_no}/{args.polls}: submitted {len(ids) + len(refused)}, " + ", ".join(
                f"{k} {v}" for k, v in sorted(done.items())
            )
            fields: dict[str, Any] = {"round": round_no, "states": dict(done), "refused": len(refused)}
            if args.simulate_pressure != "none":
                cap = client.capacity()
                line += f"; refused by admission {len(refused)}; mode {cap.mode}, replicas R={cap.replicas}"
                fields.update(mode=cap.mode, replicas=cap.replicas)
                # Pace rounds at the controller's window so each round shows a new evaluation.
                time.sleep(max(0.0, PRESSURE_ROUND_S - (time.monotonic() - round_started)))
            say(args, line, **fields)
        summary = summarise(client, all_ids)
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    summary["refused_by_admission"] = refusals
    print_summary(args, summary)
    return 0 if summary["units"].get("completed", 0) == len(all_ids) else 1


def summarise(client: KrakoClient, ids: list[str]) -> dict[str, Any]:
    units = [client.get(uid) for uid in ids]
    events: list[Any] = []
    after = 0
    while True:
        page = client.read_events(after_seq=after, limit=5000)
        if not page.events:
            break
        events.extend(page.events)
        after = page.events[-1].seq
    wanted = set(ids)
    claims = Counter(e.work_unit_id for e in events if e.type == "workunit.claimed" and e.work_unit_id in wanted)
    completions = Counter(e.work_unit_id for e in events if e.type == "workunit.completed" and e.work_unit_id in wanted)
    offers = [json.loads(e.payload_json) for e in events if e.type == "workunit.scheduled" and e.work_unit_id in wanted]
    llm = [
        json.loads(e.payload_json) for e in events if e.type == "llm.invocation.completed" and e.work_unit_id in wanted
    ]
    summary: dict[str, Any] = {
        "units": dict(Counter(state_name(u.state) for u in units)),
        "by_node": dict(Counter(u.node_id for u in units)),
        "events": dict(sorted(Counter(e.type for e in events).items())),
        "log_seq": events[-1].seq if events else 0,
        "max_claims_per_unit": max(claims.values(), default=0),
        "max_completions_per_unit": max(completions.values(), default=0),
        "offers_per_unit": max((len(o.get("offered_to", [])) for o in offers), default=0),
        "cpu_seconds": sum(float(u.cpu_seconds or 0) for u in units),
        "llm_invocations": [
            {
                k: inv.get(k)
                for k in (
                    "model",
                    "tier",
                    "tokens_in",
                    "tokens_out",
                    "total_tokens",
                    "latency_ms",
                    "estimated_cost_usd",
                    "node_id",
                )
            }
            for inv in llm
        ],
    }
    summary["capacity_timeline"] = [
        {"type": e.type, **{k: v for k, v in json.loads(e.payload_json).items() if k in TIMELINE_FIELDS}}
        for e in events
        if e.type in ("capacity.admission.mode.changed", "capacity.scale.requested")
    ]
    summary.update(optional_sections(client))
    return summary


TIMELINE_FIELDS = ("window", "from", "to", "rule", "from_replicas", "to_replicas")


def optional_sections(client: KrakoClient) -> dict[str, Any]:
    """Billing and capacity, when this krakod serves them."""
    extra: dict[str, Any] = {}
    try:
        extra["wallets"] = {w.tenant_id: {"balance": w.balance_usd, "debited": w.debited_usd} for w in client.wallets()}
        extra["billing_findings"] = len(client.check_billing().findings)
    except KrakoError:
        pass
    try:
        cap = client.capacity()
        extra["capacity"] = {
            "mode": cap.mode,
            "replicas": cap.replicas,
            "timeline": [(w.window, w.mode, w.replicas) for w in cap.recent],
        }
    except KrakoError:
        pass
    return extra


def print_summary(args: argparse.Namespace, s: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"summary": s}, sort_keys=True), flush=True)
        return
    print("\n== summary ==")
    print(f"units:        {s['units']}  in {s['elapsed_s']} s")
    print(f"by node:      {s['by_node']}")
    print(
        f"claims/unit:  at most {s['max_claims_per_unit']} (offered to {s['offers_per_unit']} agents each); "
        f"completions/unit: at most {s['max_completions_per_unit']}"
    )
    print(f"cpu seconds:  {s['cpu_seconds']:.6f}")
    for inv in s["llm_invocations"]:
        print(
            f"llm:          {inv['model']} ({inv['tier']}) tokens {inv['tokens_in']}+{inv['tokens_out']}="
            f"{inv['total_tokens']} latency {inv['latency_ms']} ms cost ${inv['estimated_cost_usd']} "
            f"on {inv['node_id']}"
        )
    if "wallets" in s:
        print(f"wallets:      {s['wallets']}  billing anomalies: {s['billing_findings']}")
    if "capacity" in s:
        print(
            f"capacity:     mode {s['capacity']['mode']}, replicas {s['capacity']['replicas']}; "
            f"refused by admission: {s['refused_by_admission']}"
        )
    first_window = min((c["window"] for c in s["capacity_timeline"]), default=0)
    for change in s["capacity_timeline"]:
        change = {**change, "window": change["window"] - first_window}
        if change["type"] == "capacity.scale.requested":
            print(
                f"  window +{change['window']}: scale R {change['from_replicas']} -> {change['to_replicas']} "
                f"({change['rule']})"
            )
        else:
            print(f"  window +{change['window']}: admission {change['from']} -> {change['to']} ({change['rule']})")
    print(f"log:          {s['log_seq']} events")
    for name, count in s["events"].items():
        print(f"  {name:<32} {count}")
