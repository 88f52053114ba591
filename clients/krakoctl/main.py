"""krakoctl: the command line of Krako, for users and operators.

Every command takes --json and then prints machine-readable JSON (one document,
or one object per line for streams). Exit status: 0 ok, 1 a check failed
(billing check, replay --verify), 2 usage or a refused request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from google.protobuf.json_format import MessageToDict

from clients.client import KrakoClient, KrakoError, state_name

DEFAULT_SERVER = os.environ.get("KRAKO_SERVER", "127.0.0.1:7420")


def to_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def emit(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        print(json.dumps(value, sort_keys=True), flush=True)
    else:
        print(text, flush=True)


def unit_summary(unit: Any) -> dict[str, Any]:
    d = to_dict(unit)
    d["state"] = state_name(unit.state)
    if unit.output_json:
        d["output"] = json.loads(unit.output_json)
    return d


def cmd_submit(client: KrakoClient, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.input)
    except ValueError as exc:
        print(f"krakoctl: --input is not valid JSON: {exc}", file=sys.stderr)
        return 2
    response = client.submit(
        kind=args.kind,
        handler=args.handler or "",
        input=payload,
        priority=args.priority,
        tenant=args.tenant or "",
        session=args.session or "",
        key=args.key or "",
        idempotent=args.idempotent,
        max_attempts=args.max_attempts,
        tier=args.tier or "",
        model=args.model or "",
        max_tokens=args.max_tokens,
        region=args.region or "",
    )
    if not args.wait:
        emit(
            args,
            to_dict(response) | {"duplicate": response.duplicate},
            f"{response.work_unit_id}{' (duplicate key: first unit)' if response.duplicate else ''}",
        )
        return 0
    unit = client.wait(response.work_unit_id)
    summary = unit_summary(unit)
    emit(
        args,
        summary,
        f"{unit.work_unit_id} {summary['state']} attempt={unit.attempt} node={unit.node_id} "
        f"output={unit.output_json or '-'} {unit.error_code} {unit.error_message}".rstrip(),
    )
    return 0 if summary["state"] == "completed" else 1


def cmd_get(client: KrakoClient, args: argparse.Namespace) -> int:
    unit = client.get(args.id)
    summary = unit_summary(unit)
    emit(args, summary, json.dumps(summary, indent=2, sort_keys=True))
    return 0


def cmd_watch(client: KrakoClient, args: argparse.Namespace) -> int:
    for update in client.watch(args.id):
        event = update.event
        emit(
            args,
            {"event": to_dict(event), "state": state_name(update.work_unit.state)},
            f"{event.seq:>8} {event.type:<28} {state_name(update.work_unit.state):<10} {event.payload_json}",
        )
    return 0


def cmd_cancel(client: KrakoClient, args: argparse.Namespace) -> int:
    unit = client.cancel(args.id, args.reason or "")
    emit(args, unit_summary(unit), f"{unit.work_unit_id} cancel requested")
    return 0


def cmd_nodes(client: KrakoClient, args: argparse.Namespace) -> int:
    nodes = client.nodes()
    if args.json:
        emit(args, [to_dict(n) for n in nodes], "")
        return 0
    print(
        f"{'NODE':<20} {'REGION':<10} {'KINDS':<14} {'HEALTH':<10} {'SLOTS':>9} {'UTIL':>5} {'LOAD':>5} "
        f"{'HB AGE':>7} {'TRUST':>8} VERSION"
    )
    for n in nodes:
        print(
            f"{n.node_id:<20} {n.region:<10} {','.join(n.kinds):<14} {n.health:<10} "
            f"{n.available_slots:>4}/{n.concurrency:<4} {n.utilization:>5.2f} {n.cpu_load:>5.2f} "
            f"{n.last_heartbeat_age_ms:>5}ms {n.trust_score or '-':>8} {n.version}"
        )
    return 0


def cmd_events(client: KrakoClient, args: argparse.Namespace) -> int:
    types = [t for t in (args.type or [])]
    if args.follow:
        for event in client.subscribe(after_seq=args.after, types=types):
            emit(
                args,
                to_dict(event),
                f"{event.seq:>8} {event.type:<28} {event.work_unit_id or '-':<36} {event.payload_json}",
            )
        return 0
    response = client.read_events(after_seq=args.after, limit=args.limit, types=types)
    for event in response.events:
        emit(
            args,
            to_dict(event),
            f"{event.seq:>8} {event.type:<28} {event.work_unit_id or '-':<36} {event.payload_json}",
        )
    return 0


def cmd_drain(client: KrakoClient, args: argparse.Namespace) -> int:
    node = client.drain(args.node, undo=args.undo)
    emit(args, to_dict(node), f"{node.node_id} {node.health}")
    return 0


def cmd_capacity(client: KrakoClient, args: argparse.Namespace) -> int:
    cap = client.capacity()
    emit(
        args,
        to_dict(cap),
        f"mode={cap.mode} replicas={cap.replicas} K={cap.concurrency_per_replica} "
        f"queue={cap.queue_depth} W95={cap.wait_p95_seconds:.2f}s util={cap.utilization:.2f} "
        f"congestion={cap.congestion}",
    )
    return 0


def cmd_wallet(client: KrakoClient, args: argparse.Namespace) -> int:
    if args.credit:
        if not args.tenant or not args.key:
            print("krakoctl: wallet --credit needs --tenant and --key", file=sys.stderr)
            return 2
        response = client.credit(args.tenant, args.credit, args.key)
        w = response.wallet
        emit(
            args,
            to_dict(response) | {"duplicate": response.duplicate},
            f"{w.tenant_id} balance={w.balance_usd}{' (duplicate top-up ignored)' if response.duplicate else ''}",
        )
        return 0
    wallets = client.wallets(args.tenant or "")
    if args.json:
        emit(args, [to_dict(w) for w in wallets], "")
        return 0
    print(f"{'TENANT':<20} {'BALANCE':>14} {'CREDITED':>14} {'DEBITED':>14} {'RESERVED':>14}")
    for w in wallets:
        print(f"{w.tenant_id:<20} {w.balance_usd:>14} {w.credited_usd:>14} {w.debited_usd:>14} {w.reserved_usd:>14}")
    return 0


def cmd_ledger(client: KrakoClient, args: argparse.Namespace) -> int:
    if args.export == "jsonl" or args.json:
        for line in client.ledger_lines(args.tenant or ""):
            sys.stdout.write(line + "\n")
        return 0
    for row in client.ledger(args.tenant or ""):
        print(" ".join(f"{k}={row[k]}" for k in sorted(row)))
    return 0


def cmd_billing(client: KrakoClient, args: argparse.Namespace) -> int:
    response = client.check_billing()
    findings = [to_dict(f) for f in response.findings]
    emit(
        args,
        {"findings": findings, "checked_through_seq": response.checked_through_seq},
        "\n".join(f"{f.kind}: {f.detail}" for f in response.findings)
        or f"no anomalies (through seq {response.checked_through_seq})",
    )
    return 1 if findings else 0


def cmd_replay(client: KrakoClient, args: argparse.Namespace) -> int:
    response = client.verify_replay()
    lines = [
        f"{d.projection:<20} live={d.live_sha256} replay={d.replay_sha256} "
        f"{'identical' if d.identical else 'DIFFERENT'}"
        for d in response.digests
    ]
    emit(
        args,
        to_dict(response) | {"identical": response.identical},
        "\n".join(lines)
        + f"\nthrough seq {response.through_seq}: {'identical' if response.identical else 'DIFFERENT'}",
    )
    return 0 if response.identical else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="krakoctl", description="Command line of the Krako execution fabric.")
    p.add_argument("--server", default=DEFAULT_SERVER, help="krakod address HOST:PORT (env KRAKO_SERVER)")
    p.add_argument("--token", default=os.environ.get("KRAKO_TOKEN"), help="API key or admin token (env KRAKO_TOKEN)")
    p.add_argument("--tls-ca", help="CA certificate to verify krakod's TLS certificate")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", required=True)
    # --json is accepted after the command too (`krakoctl submit ... --json`); SUPPRESS keeps the global value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")

    s = sub.add_parser("submit", help="submit a work unit", parents=[common])
    s.add_argument("--kind", required=True, choices=["cpu", "llm_pod"])
    s.add_argument("--handler")
    s.add_argument("--input", default="null", help="input JSON")
    s.add_argument("--priority", default="p2", choices=["p0", "p1", "p2", "p3"])
    s.add_argument("--tenant")
    s.add_argument("--session")
    s.add_argument("--key", help="client key: submitting the same key twice creates one unit")
    s.add_argument("--idempotent", action="store_true", help="the unit may be retried after retryable failures")
    s.add_argument("--max-attempts", type=int, default=0)
    s.add_argument("--tier")
    s.add_argument("--model")
    s.add_argument("--max-tokens", type=int, default=0)
    s.add_argument("--region")
    s.add_argument("--wait", action="store_true", help="wait until the unit is terminal and print its final state")
    s.set_defaults(func=cmd_submit)

    for name, func, helptext in (("get", cmd_get, "show a work unit"), ("watch", cmd_watch, "stream a unit's events")):
        c = sub.add_parser(name, help=helptext, parents=[common])
        c.add_argument("id")
        c.set_defaults(func=func)
    c = sub.add_parser("cancel", help="cancel a work unit", parents=[common])
    c.add_argument("id")
    c.add_argument("--reason")
    c.set_defaults(func=cmd_cancel)

    sub.add_parser("nodes", help="list agents", parents=[common]).set_defaults(func=cmd_nodes)
    e = sub.add_parser("events", help="read or follow the event log", parents=[common])
    e.add_argument("--after", type=int, default=0)
    e.add_argument("--limit", type=int, default=100)
    e.add_argument("--follow", action="store_true")
    e.add_argument("--type", action="append")
    e.set_defaults(func=cmd_events)
    d = sub.add_parser("drain", help="stop new placements on a node; its work finishes", parents=[common])
    d.add_argument("node")
    d.add_argument("--undo", action="store_true", help="lift the drain: the node takes new work again")
    d.set_defaults(func=cmd_drain)
    sub.add_parser("capacity", help="admission mode, replicas and queue", parents=[common]).set_defaults(
        func=cmd_capacity
    )
    w = sub.add_parser("wallet", help="wallet balances, or a top-up with --credit", parents=[common])
    w.add_argument("--tenant")
    w.add_argument("--credit", metavar="USD", help="top up by this amount (needs --tenant and --key)")
    w.add_argument("--key", help="client key of the top-up: sending it twice credits once")
    w.set_defaults(func=cmd_wallet)
    lg = sub.add_parser("ledger", help="ledger lines", parents=[common])
    lg.add_argument("--tenant")
    lg.add_argument("--export", choices=["jsonl"])
    lg.set_defaults(func=cmd_ledger)
    b = sub.add_parser("billing", help="billing checks", parents=[common])
    b.add_argument("action", choices=["check"])
    b.set_defaults(func=cmd_billing)
    r = sub.add_parser("replay", help="rebuild projections from seq 0 and compare", parents=[common])
    r.add_argument("--verify", action="store_true", required=True)
    r.set_defaults(func=cmd_replay)

    from clients.krakoctl.demo import add_demo_parser

    add_demo_parser(sub, common)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        raise SystemExit(args.func(args))
    try:
        with KrakoClient(args.server, token=args.token, tls_ca=args.tls_ca) as client:
            code = args.func(client, args)
    except KrakoError as exc:
        if args.json:
            print(json.dumps({"error": {"code": exc.code.name, "message": exc.message}}), file=sys.stderr)
        else:
            print(f"krakoctl: {exc.code.name}: {exc.message}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    raise SystemExit(code)


if __name__ == "__main__":
    main()
