"""`policy_keeps`: which planned deletions a fresh evaluation keeps, and the reason it gives
(invariant 8; the run itself is tested against the registry in test_apply_policy_check.py)."""

from __future__ import annotations

from dataclasses import replace

from retention.apply import policy_keeps
from tests.support.plans import entry, image_raw, make_plan

A, B, C, D = (image_raw(s) for s in "abcd")


def test_only_planned_deletions_the_fresh_evaluation_keeps_are_returned_with_its_reason() -> None:
    plan = make_plan(
        [entry("app", A, tags=["a"]), entry("app", B, tags=["b"]), entry("app", C, tags=["c"])],
        [entry("app", D, tags=["d"], reason="among the last 1")],
    )
    fresh = make_plan(
        [entry("app", A, tags=["a"])],  # deleted by both: not returned
        [
            entry("app", B, tags=["b"], reason="among the last 2 (rank 2)"),  # rule prefix added
            replace(entry("app", D, tags=["d"]), rule=None, reason="protected"),  # not planned
            entry("other", C, tags=["c"], reason="kept"),  # another repository: not this entry
        ],
    )
    # C is in neither of fresh's lists for `app`: gone or unreachable, left to apply's checks
    assert policy_keeps(plan, fresh) == {
        ("app", entry("app", B).digest): "rule `rule`: among the last 2 (rank 2)"
    }


def test_a_reason_that_already_names_its_rule_is_not_prefixed_twice() -> None:
    planned = entry("app", A, tags=["a"])
    fresh = make_plan([], [replace(planned, reason="rule `rule`: kept by its rank")])
    assert policy_keeps(make_plan([planned]), fresh) == {
        ("app", planned.digest): "rule `rule`: kept by its rank"
    }
