"""Untag records of the apply journal: what restore needs (the tag, the image it pointed at and
that image's bytes) and what a resumed run needs (the throw-away digest, and whether an outcome
followed the intent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention.errors import JournalError
from retention.journal import (
    Journal,
    UntagIntentRecord,
    UntagOutcomeRecord,
    from_json,
    read_journal,
    to_json,
)

AT = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
T1 = "sha256:" + "7" * 64


def _open(path: Path) -> Journal:
    return Journal(path, registry="http://127.0.0.1:5000/", clock=lambda: AT).open(
        plan_sha256="ab" * 32, policy_path="p.yaml"
    )


@pytest.mark.parametrize(
    "record",
    [
        UntagIntentRecord(
            "http://127.0.0.1:5000", "a/b", "v1", D1, "application/x", b"{}", "throw-away", T1, AT
        ),
        UntagIntentRecord(
            "http://127.0.0.1:5000", "a/b", "dangling", None, None, None, "throw-away", T1, AT
        ),
        UntagIntentRecord(
            "http://127.0.0.1:5000", "a/b", "v1", D1, "application/x", b"{}", "delete-tag", None, AT
        ),
        UntagOutcomeRecord("done", "a/b", "v1", None, AT),
        UntagOutcomeRecord("stale", "a/b", "v1", "moved to sha256:…", AT),
    ],
    ids=["throw-away", "dangling", "delete-tag", "done", "stale"],
)
def test_untag_records_round_trip(record: UntagIntentRecord | UntagOutcomeRecord) -> None:
    line = to_json(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert from_json(line) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "rename"}, "unknown untag method"),
        ({"manifest": "not base64!"}, "not base64"),
        ({"tag": 5}, "'tag' is missing"),
    ],
    ids=["method", "manifest", "tag"],
)
def test_bad_untag_intents_are_errors(change: dict[str, object], message: str) -> None:
    intent = UntagIntentRecord(
        "http://r", "a/b", "v1", D1, "application/x", b"{}", "throw-away", T1, AT
    )
    doc = json.loads(to_json(intent)) | change
    with pytest.raises(JournalError, match=message):
        from_json(json.dumps(doc))


def test_unknown_untag_outcome_is_an_error() -> None:
    doc = json.loads(to_json(UntagOutcomeRecord("done", "a/b", "v1", None, AT)))
    doc["outcome"] = "maybe"
    with pytest.raises(JournalError, match="unknown untag outcome"):
        from_json(json.dumps(doc))


def test_finished_untags_are_done_or_gone(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path) as journal:
        for tag in ("a", "b", "c"):
            journal.untag_intent(
                repository="r/x",
                tag=tag,
                digest=D1,
                media_type="application/x",
                raw=b"{}",
                method="throw-away",
                throwaway=T1,
            )
        journal.untag_outcome("done", repository="r/x", tag="a")
        journal.untag_outcome("failed", repository="r/x", tag="b", reason="refused")
    state = read_journal(path)
    assert sorted(state.untag_outcomes()) == [("r/x", "a"), ("r/x", "b")]
    assert sorted(state.untags_finished()) == [("r/x", "a")]
    assert state.untag_intents()[("r/x", "c")].throwaway == T1
    assert state.registry == "http://127.0.0.1:5000"
    assert state.intents() == {}  # untags are not manifest deletions
