"""Properties over random metric trajectories: bounds, steps, cooldowns, legal modes, restore."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from krakod.capacity import AdmissionMode, CapacityConfig, CapacityController, CapacityView, WindowMetrics
from krakod.capacity.state import MODE_CHANGED, SCALE_REQUESTED
from krakod.log.types import NewEvent

LEGAL_TRANSITIONS = {
    ("OPEN", "THROTTLED"),
    ("THROTTLED", "CRITICAL"),
    ("THROTTLED", "OPEN"),
    ("CRITICAL", "THROTTLED"),
    ("CRITICAL", "OPEN"),
}


def window_metrics(
    depths: st.SearchStrategy[int], waits_s: st.SearchStrategy[float], utilizations: st.SearchStrategy[float]
) -> st.SearchStrategy[WindowMetrics]:
    return st.builds(WindowMetrics, window=st.just(0), queue_depth=depths, wait_p95_s=waits_s, utilization=utilizations)


# A mixture of regimes, so that streaks of idle, busy and critical windows all happen.
fresh_window = st.one_of(
    window_metrics(st.integers(0, 39), st.floats(0.0, 0.99), st.floats(0.0, 0.44)),  # idle
    window_metrics(st.integers(0, 2_500), st.floats(0.0, 12.0), st.floats(0.0, 1.0)),  # anything
    window_metrics(
        st.sampled_from([39, 40, 200, 201, 499, 500, 899, 900, 999, 1_000]), st.just(0.5), st.just(0.5)
    ),  # on the lines
)
# A segment repeats one window's metrics (None: stale) a few times, after a possible gap.
segment = st.tuples(
    st.one_of(fresh_window, fresh_window, fresh_window, st.none()), st.integers(1, 12), st.sampled_from([0, 0, 0, 2])
)
trajectories = st.lists(segment, min_size=1, max_size=25)


@st.composite
def configs(draw: st.DrawFn) -> CapacityConfig:
    replicas_min = draw(st.integers(1, 4))
    replicas_max = draw(st.integers(replicas_min, replicas_min + 8))
    return CapacityConfig(
        replicas_min=replicas_min,
        replicas_max=replicas_max,
        replicas_initial=draw(st.integers(replicas_min, replicas_max)),
        window_s=draw(st.sampled_from([1.0, 10.0, 30.0])),
    )


Segment = tuple[WindowMetrics | None, int, int]


def run_trajectory(c: CapacityController, segments: list[Segment]) -> list[NewEvent]:
    events: list[NewEvent] = []
    window = 0
    steps = [(metrics, skipped if i == 0 else 0) for metrics, repeat, skipped in segments for i in range(repeat)]
    for metrics, skipped in steps:
        window += skipped
        m = (
            WindowMetrics.missing(window)
            if metrics is None
            else WindowMetrics(
                window=window,
                queue_depth=metrics.queue_depth,
                wait_p95_s=metrics.wait_p95_s,
                utilization=metrics.utilization,
            )
        )
        produced = c.evaluate(m)
        assert len([e for e in produced if e.type == SCALE_REQUESTED]) <= 1
        assert len([e for e in produced if e.type == MODE_CHANGED]) <= 1
        if metrics is None:
            assert all(e.type != SCALE_REQUESTED for e in produced), "stale windows freeze R"
        assert c.config.replicas_min <= c.replicas <= c.config.replicas_max
        events.extend(produced)
        window += 1
    return events


@settings(max_examples=150, deadline=None)
@given(config=configs(), segments=trajectories)
def test_random_trajectories_respect_bounds_steps_cooldowns_and_modes(
    config: CapacityConfig, segments: list[Segment]
) -> None:
    c = CapacityController(config=config)
    events = run_trajectory(c, segments)

    mode = "OPEN"
    last_up: int | None = None
    last_down: int | None = None
    for event in events:
        p = event.payload
        if event.type == MODE_CHANGED:
            assert p["from"] == mode
            assert (p["from"], p["to"]) in LEGAL_TRANSITIONS
            mode = p["to"]
            continue
        delta = p["to_replicas"] - p["from_replicas"]
        window = p["window"]
        assert config.replicas_min <= p["to_replicas"] <= config.replicas_max
        if delta > 0:
            assert 1 <= delta <= 3
            if last_up is not None:
                assert (window - last_up) * config.window_s >= config.cooldown_after_scale_up_s
            if last_down is not None and p["rule"] != "pressure_forced":
                assert (window - last_down) * config.window_s >= config.cooldown_after_scale_down_s
            last_up = window
        else:
            assert -2 <= delta <= -1
            assert mode != "CRITICAL", "no scale-down during CRITICAL"
            for since, cooldown in (
                (last_up, config.cooldown_after_scale_up_s),
                (last_down, config.cooldown_after_scale_down_s),
            ):
                if since is not None:
                    assert (window - since) * config.window_s >= cooldown
            last_down = window
    assert mode == c.mode.value


@settings(max_examples=100, deadline=None)
@given(config=configs(), segments=trajectories)
def test_restoring_from_the_logged_events_gives_the_same_state(config: CapacityConfig, segments: list[Segment]) -> None:
    live = CapacityController(config=config, pool="cpu")
    events = run_trajectory(live, segments)
    committed = [e.to_event(seq, ts_us=seq) for seq, e in enumerate(events, start=1)]

    restarted = CapacityController(config=config, pool="cpu")
    restarted.restore(committed)
    assert restarted.state == live.state

    view = CapacityView(default_replicas=config.initial_replicas)
    for event in committed:
        view.apply(event)
    assert view.state("cpu") == live.state
    assert view.mode() is (live.mode if events else AdmissionMode.OPEN)
