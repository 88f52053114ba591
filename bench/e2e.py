"""End-to-end throughput and latency with real processes: krakod + N agentd + one client.

    python bench/e2e.py [--units 5000] [--batch 500] [--agents 2] [--concurrency 64]
                        [--latency-units 500] [--rate 100]

1. Throughput: submit --units `echo` units in batches, observe every workunit.completed
   through EventService.SubscribeEvents; units/s from the first submit to the last
   completion seen by the client.
2. Latency: --latency-units units submitted one by one, paced at --rate per second;
   p50/p99 of submit→completed as observed by the client.
Also prints the log's events/unit and, if krakod serves projections, their lag.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from krako.v1 import admin_pb2, admin_pb2_grpc, common_pb2, events_pb2, events_pb2_grpc, gateway_pb2, gateway_pb2_grpc

from clients.processes import start_agentd, start_krakod


def spec(i: int, tag: str) -> common_pb2.WorkUnitSpec:
    return common_pb2.WorkUnitSpec(kind="cpu", handler="echo", input_json=f'{{"i":{i}}}', client_key=f"{tag}-{i}")


class Completions:
    """Follows the log for completions and records when each unit's completion reached the client."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = events_pb2_grpc.EventServiceStub(channel)
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def follow(self, after_seq: int) -> None:
        request = events_pb2.SubscribeEventsRequest(after_seq=after_seq, types=["workunit.completed"])
        async for batch in self.stub.SubscribeEvents(request):
            now = time.perf_counter()
            for event in batch.events:
                self.seen.setdefault(event.work_unit_id, now)
            self.changed.set()

    async def wait_all(self, ids: set[str], timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while not ids <= self.seen.keys():
            self.changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                missing = len(ids - self.seen.keys())
                raise TimeoutError(f"{missing} units did not complete in {timeout_s} s")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


LAG_SAMPLE_S = 0.25


async def sample_projection_lag(channel: grpc.aio.Channel, lags: list[int]) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    while True:
        lags.append((await admin.GetCapacity(admin_pb2.GetCapacityRequest())).projection_lag_events)
        await asyncio.sleep(LAG_SAMPLE_S)  # a sampling period, not a wait for a condition


async def throughput(address: str, units: int, batch: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        last = await events_pb2_grpc.EventServiceStub(channel).ReadEvents(events_pb2.ReadEventsRequest(limit=1))
        completions = Completions(channel)
        follower = asyncio.create_task(completions.follow(last.last_seq))
        lags: list[int] = []
        sampler = asyncio.create_task(sample_projection_lag(channel, lags))
        ids: set[str] = set()
        started = time.perf_counter()
        pending = []
        for start in range(0, units, batch):
            request = gateway_pb2.SubmitWorkUnitsRequest(
                specs=[spec(i, "tput") for i in range(start, min(units, start + batch))]
            )
            pending.append(gateway.SubmitWorkUnits(request))
            if len(pending) >= 4:  # a few batches in flight: the client pipelines like a real producer would
                for response in await asyncio.gather(*pending):
                    ids.update(r.work_unit_id for r in response.results)
                pending = []
        for response in await asyncio.gather(*pending):
            ids.update(r.work_unit_id for r in response.results)
        submitted = time.perf_counter()
        await completions.wait_all(ids, timeout_s=300)
        finished = max(completions.seen[i] for i in ids)
        follower.cancel()
        sampler.cancel()
    elapsed = finished - started
    print(
        f"throughput: {units} echo units, batches of {batch}: submitted in {submitted - started:.2f} s, "
        f"all completed in {elapsed:.2f} s -> {units / elapsed:,.0f} units/s"
    )
    if lags:
        print(
            f"projection lag during the run (sampled every {LAG_SAMPLE_S} s): median "
            f"{statistics.median(lags):.0f} events, max {max(lags)} events"
        )


async def latency(address: str, units: int, rate: float) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        last = await events_pb2_grpc.EventServiceStub(channel).ReadEvents(events_pb2.ReadEventsRequest(limit=1))
        completions = Completions(channel)
        follower = asyncio.create_task(completions.follow(last.last_seq))
        submitted_at: dict[str, float] = {}
        begin = time.perf_counter()

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            response = await gateway.SubmitWorkUnit(gateway_pb2.SubmitWorkUnitRequest(spec=spec(i, "lat")))
            submitted_at[response.work_unit_id] = t0

        tasks = []
        for i in range(units):
            target = begin + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load generator, not waiting for a result
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        await completions.wait_all(set(submitted_at), timeout_s=120)
        follower.cancel()
    latencies = sorted((completions.seen[u] - t0) * 1000 for u, t0 in submitted_at.items())
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"latency: {units} units paced at {rate:.0f}/s: submit->completed p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {latencies[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-units", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--krakod-arg", action="append", default=[], help="extra krakod flag (repeatable)")
    parser.add_argument(
        "--drain-units",
        type=int,
        default=0,
        help="also measure the execution pipeline alone: submit this many units before any agent runs, "
        "then time how fast the agents drain them (from the log's timestamps)",
    )
    args = parser.parse_args()
    # SIGTERM (e.g. from `timeout`) must still stop the processes the benchmark started.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.drain_units:
        drain(args)
    with tempfile.TemporaryDirectory(prefix="krako-bench-") as tmp:
        root = Path(tmp)
        # Admission control would (rightly) throttle a 5,000-unit backlog; the benchmark measures raw throughput.
        krakod = start_krakod(root / "krakod", "--queue-max", "100000", *args.krakod_arg)
        agents = [
            start_agentd(krakod.address, f"bench-{i}", root / f"agent-{i}", concurrency=args.concurrency)
            for i in range(args.agents)
        ]
        try:
            from clients.client import KrakoClient

            with KrakoClient(krakod.address) as client:
                client.wait_for_nodes(args.agents)
            asyncio.run(throughput(krakod.address, args.units, args.batch))
            if args.latency_units:
                asyncio.run(latency(krakod.address, args.latency_units, args.rate))
            with KrakoClient(krakod.address) as client:
                last_seq = client.read_events(limit=1).last_seq
            print(
                f"log: {last_seq} events for {args.units + args.latency_units} units "
                f"({last_seq / (args.units + args.latency_units):.1f} per unit)"
            )
        finally:
            for agent in agents:
                agent.stop()
            krakod.stop()


def drain(args: argparse.Namespace) -> None:
    """Backlog first, agents second: the claim/execute/result pipeline without submission or a following client."""
    import sqlite3

    from clients.client import KrakoClient, make_spec

    with tempfile.TemporaryDirectory(prefix="krako-bench-drain-") as tmp:
        root = Path(tmp)
        krakod = start_krakod(root / "krakod", "--queue-max", "100000", *args.krakod_arg)
        agents = []
        try:
            with KrakoClient(krakod.address) as client:
                for start in range(0, args.drain_units, args.batch):
                    count = min(args.batch, args.drain_units - start)
                    client.submit_many(
                        [make_spec(kind="cpu", handler="echo", input={"i": start + i}) for i in range(count)]
                    )
                agents = [
                    start_agentd(krakod.address, f"drain-{i}", root / f"agent-{i}", concurrency=args.concurrency)
                    for i in range(args.agents)
                ]
                seen = 0
                for _event in client.subscribe(types=["workunit.completed"]):
                    seen += 1
                    if seen >= args.drain_units:
                        break
            db = sqlite3.connect(root / "krakod" / "events.sqlite")
            first, last = db.execute(
                "SELECT MIN(ts_us), MAX(ts_us) FROM events WHERE type = 'workunit.completed'"
            ).fetchone()
            db.close()
            print(
                f"drain: {args.drain_units} queued echo units executed at "
                f"{args.drain_units / ((last - first) / 1e6):,.0f} units/s "
                f"(first to last completion, {args.agents} agents x concurrency {args.concurrency})"
            )
        finally:
            for agent in agents:
                agent.stop()
            krakod.stop()


if __name__ == "__main__":
    main()
