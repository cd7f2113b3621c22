"""Executes a `Plan`: refusals before the first DELETE, re-verification against the registry,
ordered concurrent DELETEs, the journal, resume and dangling-tag repair.

Rooms: `preflight` (pure refusals before the first request), `verify` (re-verification against
the registry), `order` (pure dependency graph and skip propagation), `execute` (the run: DELETE
scheduler, journal, resume, dangling-tag repair), `untag` (the plan's untags, after the
DELETEs), `control` (the pool and the stop state a run
shares), `outcomes` (the values). Never prints: progress goes to an injected callback; the CLI
renders it. Request budget and the reasons behind each step: docs/decisions.md (Apply).
"""

from retention.apply.execute import apply_plan
from retention.apply.outcomes import (
    ApplyReport,
    EntryOutcome,
    OnOutcome,
    OutcomeKind,
    ProgressEvent,
    UntagOutcome,
)
from retention.apply.preflight import (
    Limit,
    Preflight,
    check_plan,
    deletion_limit,
    parse_max_deletions,
    policy_keeps,
    policy_untag_keeps,
    untagged_owned,
)

__all__ = [
    "ApplyReport",
    "EntryOutcome",
    "Limit",
    "OnOutcome",
    "OutcomeKind",
    "Preflight",
    "ProgressEvent",
    "UntagOutcome",
    "apply_plan",
    "check_plan",
    "deletion_limit",
    "parse_max_deletions",
    "policy_keeps",
    "policy_untag_keeps",
    "untagged_owned",
]
