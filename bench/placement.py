"""Placement cost per decision as the fleet grows.

    python bench/placement.py [--decisions 20000] [--sizes 100,1000,10000] [--fanout 1]

Nodes span 5 kinds (each node runs one or two) and 8 regions, with random concurrency,
load, queue depth, versions and trust. Each decision places one unit (a random kind; a
preferred region, a required region or none; sometimes a minimum version), then the
benchmark reserves the chosen slot and releases an older one, so the index churns as
it would under load. Only `Scheduler.place` is timed, twice: wall clock, and the
thread's CPU time (which leaves out the time the OS gave the core to other processes; on
a shared 2-core machine, wall-clock p99 mostly measures preemption).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from krakod.scheduler import (
    BreakerBoard,
    Measurements,
    NodeHello,
    NodeRegistry,
    Placement,
    PlacementRequest,
    Scheduler,
    TrustView,
)

KINDS = ("cpu", "llm_pod", "gpu", "wasm", "batch")
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south")
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0")


def build(size: int, rng: random.Random) -> tuple[NodeRegistry, TrustView]:
    registry = NodeRegistry()
    scores: dict[str, float] = {}
    for i in range(size):
        node_id = f"node-{i:05d}"
        kinds = frozenset(rng.sample(KINDS, rng.choice((1, 2))))
        registry.register(
            NodeHello(
                node_id=node_id,
                region=rng.choice(REGIONS),
                kinds=kinds,
                concurrency=rng.randint(2, 16),
                version=rng.choice(VERSIONS),
            ),
            now_ms=0,
        )
        registry.heartbeat(
            node_id,
            Measurements(cpu_load=rng.random(), queue_depth=rng.randint(0, 5), utilization=rng.random() / 2),
            now_ms=rng.randint(0, 20_000),
        )
        scores[node_id] = round(rng.uniform(0.3, 1.0), 3)
    return registry, TrustView(scores=scores)


def request(index: int, rng: random.Random) -> PlacementRequest:
    region_mode = rng.random()
    return PlacementRequest(
        work_unit_id=f"wu-{index}",
        kind=rng.choice(KINDS),
        region=rng.choice(REGIONS) if region_mode < 0.7 else "",
        region_required=region_mode < 0.2,
        min_runtime_version="1.1.0" if rng.random() < 0.3 else "",
    )


def run(size: int, decisions: int, fanout: int) -> None:
    rng = random.Random(size)
    registry, trust = build(size, rng)
    scheduler = Scheduler(registry=registry)
    gate = BreakerBoard()
    requests = [request(i, rng) for i in range(decisions)]
    held: list[str] = []
    timings_ns: list[int] = []
    cpu_ns: list[int] = []
    placed = 0
    for unit in requests:
        started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
        outcome = scheduler.place(unit, now_ms=20_000, trust=trust, gate=gate, fanout=fanout)
        cpu_ns.append(time.thread_time_ns() - started_cpu)
        timings_ns.append(time.perf_counter_ns() - started)
        if isinstance(outcome, Placement):
            placed += 1
            registry.reserve_slot(outcome.node_id)
            held.append(outcome.node_id)
        if len(held) > size // 2:  # keep the fleet about half full
            registry.release_slot(held.pop(0))
    print(
        f"nodes={size:>6}  decisions={decisions}  placed={placed}  fanout={fanout}  "
        f"wall {summary(timings_ns)}  |  cpu {summary(cpu_ns)}"
    )


def summary(samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2] / 1e6
    p99 = ordered[int(len(ordered) * 0.99)] / 1e6
    return f"p50={p50:.3f} ms p99={p99:.3f} ms mean={statistics.fmean(ordered) / 1e6:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--fanout", type=int, default=1)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.decisions, args.fanout)


if __name__ == "__main__":
    main()
