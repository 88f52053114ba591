"""Invariant 2: no double billing. Duplicates, resends and restarts never add a ledger line."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariant_support import build_log, fold, fold_with_restarts, money_digest, query, scratch_dir

from krakod.log import NewEvent
from krakod.log.types import new_event_id
from krakod.projections.synthetic import credit, pricing, random_workload

EXAMPLES = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLAGS = [(False, False), (False, True), (True, False), (True, True)]


def noisy(events: list[NewEvent], rng: random.Random) -> tuple[list[list[NewEvent]], list[NewEvent]]:
    """The same events delivered in small batches with duplicates and agent resends mixed in.

    Returns the batches, and the resends that reached the log under a new key (a buggy sender):
    only the fold can keep those from billing twice.
    """
    batches: list[list[NewEvent]] = []
    bypassing: list[NewEvent] = []
    index = 0
    while index < len(events):
        size = rng.randint(1, 8)
        batch = list(events[index : index + size])
        index += size
        for earlier in rng.sample(events[:index], k=min(index, rng.randint(0, 3))):
            roll = rng.random()
            if roll < 0.5:
                batch.append(earlier)  # a duplicate delivery of the very same event
            elif roll < 0.8:
                batch.append(replace(earlier, event_id=new_event_id()))  # an agent resend: same key
            elif earlier.type in ("llm.invocation.completed", "workunit.completed", "wallet.credited"):
                resend = replace(earlier, event_id=new_event_id(), idempotency_key=f"resend:{new_event_id()}")
                batch.append(resend)
                bypassing.append(resend)
        batches.append(batch)
    return batches, bypassing


@EXAMPLES
@given(st.integers(0, 2**32), st.integers(5, 30))
def test_duplicates_resends_and_restarts_give_the_ledger_of_one_clean_pass(seed: int, units: int) -> None:
    rng = random.Random(seed)
    events = random_workload(rng, units)
    with scratch_dir() as tmp:
        build_log(tmp / "clean.sqlite", [events])
        clean = fold(tmp / "clean.sqlite", tmp / "clean-projections.sqlite")

        batches, _ = noisy(events, rng)
        build_log(tmp / "noisy.sqlite", batches)
        straight = fold(tmp / "noisy.sqlite", tmp / "straight.sqlite")
        restarted = fold_with_restarts(tmp / "noisy.sqlite", tmp / "restarted.sqlite", rng)

        assert restarted == straight  # every view, trust included, byte for byte
        assert money_digest(tmp / "straight.sqlite") == money_digest(tmp / "clean-projections.sqlite")
        assert clean["billing.ledger"] != ""


@EXAMPLES
@given(st.integers(0, 2**32), st.sampled_from(FLAGS), st.booleans())
def test_every_flag_combination_bills_llm_tokens_exactly_once(
    seed: int, flags: tuple[bool, bool], bill_failed: bool
) -> None:
    from_completed, from_invocation = flags
    rng = random.Random(seed)
    terms = {
        "bill_llm_from_workunit_completed": from_completed,
        "bill_llm_from_invocation": from_invocation,
        "bill_failed_attempts": bill_failed,
    }
    events = [pricing(1, **terms), *random_workload(rng, 20, llm_share=1.0, failure_share=0.4)]
    with scratch_dir() as tmp:
        batches, _ = noisy(events, rng)
        build_log(tmp / "events.sqlite", batches)
        fold(tmp / "events.sqlite", tmp / "p.sqlite")
        per_attempt = query(
            tmp / "p.sqlite",
            "SELECT work_unit_id, attempt, COUNT(*) FROM billing_ledger WHERE line_type = 'llm_tokens' "
            "GROUP BY work_unit_id, attempt",
        )
        assert all(count == 1 for _, _, count in per_attempt)
        completed = {
            (e.work_unit_id, e.payload["attempt"]): e.payload["llm"]["total_tokens"]
            for e in events
            if e.type == "workunit.completed"
        }
        billed = {
            (unit, attempt): tokens
            for unit, attempt, tokens in query(
                tmp / "p.sqlite",
                "SELECT work_unit_id, attempt, total_tokens FROM billing_ledger WHERE line_type = 'llm_tokens'",
            )
        }
        assert {key: billed.get(key) for key in completed} == completed  # every successful attempt, once
        if not bill_failed:
            assert len(per_attempt) == len(completed)


@EXAMPLES
@given(st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3"]), st.integers(1, 10**8)), min_size=1, max_size=12))
def test_a_top_up_with_the_same_client_key_credits_once(top_ups: list[tuple[str, int]]) -> None:
    events = [credit("acme", f"{amount / 10**6:.6f}", key) for key, amount in top_ups]
    first_amount: dict[str, int] = {}
    for key, amount in top_ups:
        first_amount.setdefault(key, amount)
    with scratch_dir() as tmp:
        build_log(tmp / "events.sqlite", [events, events])
        fold(tmp / "events.sqlite", tmp / "p.sqlite")
        ((credited,),) = query(tmp / "p.sqlite", "SELECT credited_micros FROM billing_wallets")
        assert credited == sum(first_amount.values())


@pytest.mark.parametrize("flags", FLAGS)
def test_a_unit_completing_twice_under_two_keys_is_billed_once(flags: tuple[bool, bool]) -> None:
    from krakod.projections.synthetic import completed, invocation, llm_block

    done = completed("wu-1", 1, "n1", "1.000000", llm=llm_block(10, 10))
    again = replace(done, event_id=new_event_id(), idempotency_key="complete:wu-1:again")
    events = [
        pricing(1, bill_llm_from_workunit_completed=flags[0], bill_llm_from_invocation=flags[1]),
        invocation("wu-1", 1, "n1", 10, 10),
        done,
        again,
        replace(invocation("wu-1", 1, "n1", 10, 10), idempotency_key="llm-again"),
    ]
    with scratch_dir() as tmp:
        build_log(tmp / "events.sqlite", [events])
        fold(tmp / "events.sqlite", tmp / "p.sqlite")
        rows = query(tmp / "p.sqlite", "SELECT line_type, COUNT(*) FROM billing_ledger GROUP BY 1 ORDER BY 1")
        assert rows == [("llm_tokens", 1), ("workunit_cpu", 1)]
