"""The controller task: windows driven by an injected clock and sleep, events appended to the log."""

from __future__ import annotations

from pathlib import Path

from krakod.capacity import (
    CAPACITY_EVENT_TYPES,
    CapacityConfig,
    CapacityController,
    MetricsSample,
    NullActuator,
    SimulatedPressure,
)
from krakod.log import EventLog, NewEvent


class FakeTime:
    """A clock that only moves when the controller sleeps."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


class RecordingActuator(NullActuator):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def apply(self, target_replicas: int) -> None:
        await super().apply(target_replicas)
        self.calls.append(target_replicas)


def keys(events: list[NewEvent]) -> list[str]:
    return [e.key() for e in events]


async def test_run_evaluates_each_window_at_its_end_and_appends_in_order() -> None:
    time = FakeTime(start_s=1_005.0)  # half-way through window 100
    appended: list[NewEvent] = []
    actuator = RecordingActuator()

    async def append(event: NewEvent) -> None:
        appended.append(event)

    c = CapacityController(pool="cpu", clock=time.clock)
    await c.run(SimulatedPressure(profile="critical"), append, sleep=time.sleep, actuator=actuator, max_windows=7)

    assert time.sleeps == [5.0] + [10.0] * 6
    assert keys(appended) == [
        "capacity.mode:cpu:100",
        "capacity.scale:cpu:100",
        "capacity.mode:cpu:102",
        "capacity.scale:cpu:106",
    ]
    assert actuator.calls == [1, 4, 7]  # reconciled at start, then after each logged scale request
    assert [r.window for r in c.recent()] == list(range(100, 107))


async def test_missing_failing_and_old_samples_are_stale_windows() -> None:
    time = FakeTime(start_s=0.0)
    samples = iter(
        [
            None,
            RuntimeError("registry unavailable"),
            MetricsSample(queue_depth=10, wait_p95_s=0.1, utilization=0.1, observed_at_s=-60.0),
            MetricsSample(queue_depth=10, wait_p95_s=0.1, utilization=0.1, fresh=False),
        ]
    )

    async def source() -> MetricsSample | None:
        item = next(samples)
        if isinstance(item, Exception):
            raise item
        return item

    appended: list[NewEvent] = []

    async def append(event: NewEvent) -> None:
        appended.append(event)

    c = CapacityController(clock=time.clock, config=CapacityConfig(replicas_initial=3))
    await c.run(source, append, sleep=time.sleep, max_windows=4)
    assert [(e.payload["to"], e.payload["rule"]) for e in appended] == [("THROTTLED", "metrics_stale")]
    assert [r.fresh for r in c.recent()] == [False] * 4
    assert c.replicas == 3


async def test_a_restarted_controller_appends_nothing_twice(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.db", synchronous="NORMAL")
    await log.open()
    try:
        created: list[bool] = []

        async def append(event: NewEvent) -> None:
            created.append((await log.append(event)).created)

        time = FakeTime(0.0)
        first = CapacityController(clock=time.clock)
        await first.run(SimulatedPressure(profile="critical"), append, sleep=time.sleep, max_windows=3)
        assert created == [True, True, True]
        logged = await log.read(0, 100, types=CAPACITY_EVENT_TYPES)

        # The same windows again, with no memory at all: the window keys make the appends no-ops.
        created.clear()
        time = FakeTime(0.0)
        amnesiac = CapacityController(clock=time.clock)
        await amnesiac.run(SimulatedPressure(profile="critical"), append, sleep=time.sleep, max_windows=3)
        assert created == [False, False, False]

        # Restored from the log, it resumes in the same state and repeats nothing.
        created.clear()
        time = FakeTime(0.0)
        restored = CapacityController(clock=time.clock)
        restored.restore(logged)
        assert restored.state == first.state
        await restored.run(SimulatedPressure(profile="critical"), append, sleep=time.sleep, max_windows=3)
        assert created == []
        assert log.last_seq == 3
    finally:
        await log.close()
