"""GitLab's own cleanup outcomes, adapted to our policy language, with `settings.untag` on and off.

Source: gitlabhq/gitlabhq, spec/services/projects/container_repository/third_party/
cleanup_tags_service_spec.rb (the fixture: `latest` and `A` share image A, pushed 1 hour ago;
`Ba` and `Bb` share image B, 5 days; `C` is 1 month old; `D`'s config has no `created`; `E` is
listed but its manifest is gone), with the parameters of its shared examples ("when regex
matching everything is specified", "with allow regex value", "when keeping only N tags", ...;
spec/services/projects/container_repository/cleanup_tags_service_spec.rb inlines the same
contexts). GitLab keeps `latest` unless told otherwise: here it is `protect`.

GitLab deletes tags, not images: a tag whose image another tag keeps is simply removed, and so is
a tag without a manifest. With `untag: true` we match it by untagging them; with `untag: false`
those rows differ (the image stays tagged "shares digest with `latest`", the dangling tag stays).
Rows where GitLab and we still differ say why in `differs`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from retention.evaluate import evaluate
from retention.model import Inventory
from retention.policy.model import Policy, Rule, UnknownAge
from tests.unit.evalkit import NOW, ago, image, inventory, policy, repo, rule

REPO = "gitlab/root"


def gitlab_fixture() -> Inventory:
    return inventory(
        repo(
            REPO,
            {"latest": "A", "A": "A", "Ba": "B", "Bb": "B", "C": "C", "D": "D"},
            [
                image("A", ago(1 / 24)),
                image("B", ago(5)),
                image("C", ago(30)),
                image("D", None),  # its config has no `created`
            ],
            dangling=["E"],
        )
    )


@dataclass(frozen=True)
class Row:
    params: str  # GitLab's parameters, as its spec writes them
    rule: Rule  # ours
    gitlab: set[str]  # the tags GitLab's spec expects deleted
    deleted: set[str]  # tags on the images our plan deletes
    untagged: set[str]  # tags our plan untags (untag: true)
    unknown_age: UnknownAge = "keep"
    differs: str = ""  # why our outcome with untag differs from GitLab's, if it does


EVERYTHING = Row(
    "name_regex_delete: '.*'",
    # nothing is kept by count; an undated image is deleted too, as GitLab does
    rule("delete", last=0),
    gitlab={"A", "Ba", "Bb", "C", "D", "E"},
    deleted={"Ba", "Bb", "C", "D"},
    untagged={"A", "E"},
    unknown_age="oldest",
)
ROWS = {
    "regex-matching-everything": EVERYTHING,
    "delete-regex-C-or-D": Row(
        "name_regex_delete: 'C|D'",
        rule("delete", tags=["C|D"], last=0),
        gitlab={"C", "D"},
        deleted={"C", "D"},
        untagged=set(),
        unknown_age="oldest",
    ),
    "delete-regex-with-keep-regex": Row(
        "name_regex_delete: 'C|D', name_regex_keep: 'C'",
        rule("delete", tags=["C|D"], exclude_tags=["C"], last=0),
        gitlab={"D"},
        deleted={"D"},
        untagged=set(),
        unknown_age="oldest",
    ),
    "allow-regex-B": Row(
        "name_regex_delete: '.*', name_regex_keep: 'B.*'",
        rule("delete", exclude_tags=["B.*"], last=0),
        gitlab={"A", "C", "D", "E"},
        deleted={"C", "D"},
        untagged={"A", "E"},
        unknown_age="oldest",
    ),
    "keep-n-1": Row(
        "name_regex: 'A|B.*|C', keep_n: 1",
        rule("keep-1", tags=["A|B.*|C"], last=1),
        gitlab={"Ba", "Bb", "C"},
        deleted={"Ba", "Bb", "C"},
        untagged=set(),
    ),
    "not-keeping-n": Row(
        "name_regex: 'A|B.*|C'",
        rule("delete", tags=["A|B.*|C"], last=0),
        gitlab={"A", "Ba", "Bb", "C"},
        deleted={"Ba", "Bb", "C"},
        untagged={"A"},
    ),
    "keep-n-3": Row(
        "name_regex_delete: '.*', keep_n: 3",
        rule("keep-3", last=3),
        gitlab={"Ba", "Bb", "C"},
        deleted=set(),
        untagged={"E"},
        differs="`last` counts images, not tags (A, B and C are the 3 most recent), and GitLab "
        "sorts a tag without a date (D, E) as the newest; a dangling tag names no image to keep",
    ),
    "older-than-1-day": Row(
        "name_regex_delete: '.*', older_than: '1 day'",
        rule("young", newer_than="1d"),
        gitlab={"Ba", "Bb", "C"},
        deleted={"Ba", "Bb", "C"},
        untagged={"E"},
        differs="GitLab never finds a tag without a date older than anything, so its dangling "
        "tag stays; ours is untagged: it names no image whose age could keep it",
    ),
    "combining-all-parameters": Row(
        "name_regex_delete: '.*', keep_n: 1, older_than: '1 day'",
        rule("both", last=1, newer_than="1d"),
        gitlab={"Ba", "Bb", "C"},
        deleted={"Ba", "Bb", "C"},
        untagged={"E"},
        differs="as older-than-1-day: the dangling tag",
    ),
}


def _policy(row: Row, *, untag: bool) -> Policy:
    return policy(row.rule, protect=["latest"], unknown_age=row.unknown_age, untag=untag)


def _outcome(p: Policy) -> tuple[set[str], set[str]]:
    plan = evaluate(p, gitlab_fixture(), NOW)
    return {t for e in plan.deletions for t in e.tags}, {u.tag for u in plan.untags}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_gitlab_outcomes_with_untag(row: Row) -> None:
    deleted, untagged = _outcome(_policy(row, untag=True))
    assert (deleted, untagged) == (row.deleted, row.untagged)
    assert (deleted | untagged == row.gitlab) == (not row.differs)


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_gitlab_outcomes_without_untag(row: Row) -> None:
    """Without untag the deletions are the same and nothing is untagged: every row where GitLab
    removes a shared or dangling tag differs."""
    deleted, untagged = _outcome(_policy(row, untag=False))
    assert (deleted, untagged) == (row.deleted, set())
    if not row.differs:
        assert (deleted == row.gitlab) == (not row.untagged)


def test_latest_is_untagged_too_when_gitlab_is_told_not_to_keep_it() -> None:
    """'when regex matching everything is specified and latest is not kept' (GitLab's
    keep_latest: false, from the same shared examples): nothing protects `latest`, so image A
    goes with both its tags."""
    p = replace(_policy(EVERYTHING, untag=True), protect_tags=())
    deleted, untagged = _outcome(p)
    assert deleted == {"latest", "A", "Ba", "Bb", "C", "D"}
    assert untagged == {"E"}
