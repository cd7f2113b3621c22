"""PURE evaluation: a policy and an inventory, at a given `now`, become a `Plan`; and the
per-tag verdicts behind `retention explain`.

No I/O and no clock (`now` is a parameter). One repository is decided in phases, each a
function: tag states and ranking (`tags`), untagged manifests (`untagged`), grounded deletions
and the keep closure (`graph`), the untags of `settings.untag` (`untags`), run in order by
`repository`; then the entries (`entries`). The plan (`summary`) and `explain` share those
phases. The policy language is docs/policy.md; what it leaves open is recorded in
docs/decisions.md (Evaluate and plan; Untag: policy and plan).
"""

from retention.evaluate.explain import Decision, TagVerdict, explain
from retention.evaluate.summary import evaluate
from retention.evaluate.untagged import IN_FLIGHT, untagged_digests
from retention.evaluate.words import FUTURE_SLACK, age_words, dated, unknown_age_words

__all__ = [
    "FUTURE_SLACK",
    "IN_FLIGHT",
    "Decision",
    "TagVerdict",
    "age_words",
    "dated",
    "evaluate",
    "explain",
    "unknown_age_words",
    "untagged_digests",
]
