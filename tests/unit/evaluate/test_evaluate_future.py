"""Dates in the future (issue 13, item 7): a `created` more than a day after the evaluation
time is an unknown age, never rank 1 (docs/decisions.md, "Dates in the future")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.evaluate import FUTURE_SLACK, dated, evaluate, explain, unknown_age_words
from tests.unit.evalkit import NOW, D, ago, image, inventory, policy, repo, rule

YEAR_9999 = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DatedCase:
    id: str
    created: datetime | None
    usable: bool


LATE = NOW + FUTURE_SLACK + timedelta(seconds=1)
DATED = [
    DatedCase("unknown-stays-unknown", None, False),
    DatedCase("past-is-usable", ago(30), True),
    DatedCase("now-is-usable", NOW, True),
    DatedCase("an-hour-ahead-is-clock-skew", NOW + timedelta(hours=1), True),
    DatedCase("exactly-one-day-ahead-is-usable", NOW + FUTURE_SLACK, True),
    DatedCase("a-second-past-the-slack-is-unknown", LATE, False),
    DatedCase("year-9999-is-unknown", YEAR_9999, False),
]


@pytest.mark.parametrize("case", DATED, ids=[c.id for c in DATED])
def test_dated(case: DatedCase) -> None:
    assert (dated(case.created, NOW) is not None) == case.usable


@dataclass(frozen=True)
class VerdictCase:
    id: str
    unknown_age: str
    last: int
    expect: dict[str, tuple[str, str]]  # tag -> (decision, text in the reason)


VERDICTS = [
    VerdictCase(
        "keep-mode-keeps-the-future-image-and-ranks-the-real-ones",
        "keep",
        1,
        {
            "future": ("kept", "age unknown (created 9999-01-01T00:00:00Z is in the future)"),
            "new": ("kept", "the most recent (rank 1)"),
            "old": ("deleted", "rank 2 > 1"),
        },
    ),
    VerdictCase(
        "oldest-mode-ranks-the-future-image-last",
        "oldest",
        2,
        {
            "future": ("deleted", "rank 3 > 2 and age unknown, created 9999-01-01T00:00:00Z is in"),
            "new": ("kept", "rank 1"),
            "old": ("kept", "rank 2"),
        },
    ),
]


def _scene() -> tuple[dict[str, str], list[object]]:
    tags = {"future": "F", "new": "N", "old": "O"}
    images = [image("F", YEAR_9999), image("N", ago(1)), image("O", ago(10))]
    return tags, images


@pytest.mark.parametrize("case", VERDICTS, ids=[c.id for c in VERDICTS])
def test_future_image_never_takes_rank_one(case: VerdictCase) -> None:
    tags, images = _scene()
    pol = policy(rule("all", last=case.last), unknown_age=case.unknown_age)  # type: ignore[arg-type]
    inv = inventory(repo("apps/web", tags, images))  # type: ignore[arg-type]
    verdicts = {v.tag: v for v in explain(pol, inv, NOW, "apps/web")}
    for tag, (decision, text) in case.expect.items():
        assert verdicts[tag].decision == decision, verdicts[tag].line()
        assert text in verdicts[tag].reason, verdicts[tag].line()
    assert verdicts["future"].age is None  # explain shows "age unknown", never "0 seconds"
    assert verdicts["future"].rank != 1


def test_future_image_is_named_in_the_plan_warnings() -> None:
    tags, images = _scene()
    inv = inventory(repo("apps/web", tags, images))  # type: ignore[arg-type]
    plan = evaluate(policy(rule("all", last=1)), inv, NOW)
    (warning,) = [w for w in plan.warnings if "in the future" in w or "after the evaluation" in w]
    assert warning.startswith("1 image created more than 1 day after the evaluation time")
    assert f"apps/web@{D('F')[:19]} (created 9999-01-01T00:00:00Z)" in warning
    assert [e.tags for e in plan.deletions] == [("old",)]


@pytest.mark.parametrize(
    ("created", "raw", "words"),
    [
        (YEAR_9999, None, "created 9999-01-01T00:00:00Z is in the future"),
        (None, "yesterday", "created yesterday"),
        (None, None, "no created date"),
    ],
    ids=["future", "unparseable", "missing"],
)
def test_unknown_age_words(created: datetime | None, raw: str | None, words: str) -> None:
    assert unknown_age_words(image("A", created, created_raw=raw), NOW) == words


@settings(max_examples=150, deadline=None)
@given(
    past=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=6, unique=True),
    future=st.lists(
        st.integers(min_value=25, max_value=10**7), min_size=1, max_size=4, unique=True
    ),
    oldest=st.booleans(),
)
def test_the_newest_real_image_is_always_kept(
    past: list[int], future: list[int], oldest: bool
) -> None:
    """Invariant: with `last: 1`, however many images claim a date more than a day ahead, the
    newest image dated in the past keeps rank 1 and is never deleted."""
    images = [image(f"P{h}", NOW - timedelta(hours=h)) for h in past]
    images += [image(f"F{h}", NOW + timedelta(hours=h)) for h in future]
    tags = {f"p{h}": f"P{h}" for h in past} | {f"f{h}": f"F{h}" for h in future}
    pol = policy(rule("all", last=1), unknown_age="oldest" if oldest else "keep")
    inv = inventory(repo("apps/web", tags, images))
    newest = f"p{min(past)}"
    verdicts = {v.tag: v for v in explain(pol, inv, NOW, "apps/web")}
    assert verdicts[newest].rank == 1
    assert verdicts[newest].decision == "kept"
    for h in future:
        assert verdicts[f"f{h}"].rank != 1
        assert verdicts[f"f{h}"].age is None
    plan = evaluate(pol, inv, NOW)
    assert D(f"P{min(past)}") not in {e.digest for e in plan.deletions}
