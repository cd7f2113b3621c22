"""The apply journal: one fsynced JSON line per record, resumable, never holding credentials."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention.errors import JournalError, LockHeld
from retention.journal import (
    IntentRecord,
    Journal,
    OutcomeRecord,
    RunRecord,
    default_journal_path,
    from_json,
    read_journal,
    to_json,
)
from retention.urls import registry_key

AT = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _clock() -> datetime:
    return AT


def _open(path: Path, registry: str = "http://127.0.0.1:5000") -> Journal:
    return Journal(path, registry=registry, clock=_clock).open(
        plan_sha256="ab" * 32, policy_path="p.yaml"
    )


def _intent(j: Journal, digest: str = D1, raw: bytes = b'{"x": 1}') -> None:
    j.intent(
        repository="app",
        digest=digest,
        media_type="m",
        size=5,
        tags=["a", "b"],
        parent=None,
        raw=raw,
    )


@pytest.mark.parametrize(
    "record",
    [
        RunRecord(registry="http://r", plan_sha256="ab", policy_path="p.yaml", at=AT),
        IntentRecord(
            registry="http://r",
            repository="app",
            digest=D1,
            media_type="m",
            size=1,
            tags=("a",),
            parent=D2,
            raw=b"\x00\xffraw",
            at=AT,
        ),
        OutcomeRecord(kind="done", repository="app", digest=D1, reason=None, at=AT),
        OutcomeRecord(kind="stale", repository="app", digest=D1, reason="tag a moved", at=AT),
    ],
    ids=["run", "intent", "done", "stale"],
)
def test_records_round_trip(record: RunRecord | IntentRecord | OutcomeRecord) -> None:
    line = to_json(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert from_json(line) == record


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "not a JSON record"),
        (b"[]", "not a JSON object"),
        (b'{"record": "nope", "at": "2026-11-27T12:00:00Z"}', "unknown record type 'nope'"),
        (b'{"record": [], "at": "2026-11-27T12:00:00Z"}', "field 'record' is missing or not"),
        (b'{"at": "2026-11-27T12:00:00Z"}', "field 'record' is missing or not"),
        (b'{"record": "done", "at": "2026-11-27T12:00:00Z", "repository": "a"}', "'digest'"),
        (
            b'{"record": "done", "at": "yesterday", "repository": "a", "digest": "d"}',
            "invalid time",
        ),
        (
            b'{"record": "run", "version": 9, "at": "2026-11-27T12:00:00Z"}',
            "journal version 9 is not supported",
        ),
    ],
    ids=[
        "junk",
        "array",
        "unknown-type",
        "record-type-not-a-string",
        "no-record-type",
        "missing-field",
        "bad-time",
        "future-version",
    ],
)
def test_bad_lines_are_reported(line: bytes, message: str) -> None:
    with pytest.raises(JournalError, match=message):
        from_json(line)


def test_each_record_is_on_disk_when_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path) as j:
        assert len(path.read_bytes().splitlines()) == 1  # the run record
        _intent(j)
        assert len(path.read_bytes().splitlines()) == 2
        j.outcome("done", repository="app", digest=D1)
        lines = path.read_bytes().splitlines()
    assert [json.loads(x)["record"] for x in lines] == ["run", "intent", "done"]


def test_state_says_what_is_finished(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path) as j:
        _intent(j, D1)
        j.outcome("done", repository="app", digest=D1)
        _intent(j, D2)  # killed before its outcome
        j.outcome("failed", repository="app", digest=D2, reason="503")
    state = read_journal(path)
    assert set(state.finished()) == {("app", D1)}
    assert set(state.intents()) == {("app", D1), ("app", D2)}
    assert state.intents()[("app", D1)].raw == b'{"x": 1}'
    assert state.registry == "http://127.0.0.1:5000"


def test_a_torn_last_line_is_ignored_and_cut_off_before_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path) as j:
        _intent(j)
    with path.open("ab") as fh:
        fh.write(b'{"record": "done", "repo')  # the crash cut this line
    assert len(read_journal(path).records) == 2
    with _open(path) as j:  # a re-run removes the torn bytes, then appends
        j.outcome("gone", repository="app", digest=D1)
    assert b'"repo\n' not in path.read_bytes() and b'"repo{' not in path.read_bytes()
    state = read_journal(path)
    assert [type(r).__name__ for r in state.records] == [
        "RunRecord",
        "IntentRecord",
        "RunRecord",
        "OutcomeRecord",
    ]
    assert set(state.finished()) == {("app", D1)}


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b"garbage\n" + to_json(OutcomeRecord("done", "app", D2, None, AT)))
    with pytest.raises(JournalError, match=r"j.jsonl:1: not a JSON record"):
        read_journal(path)


def test_a_second_apply_of_the_same_plan_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path), pytest.raises(LockHeld, match="another apply of this plan is running"):
        _open(path)
    with _open(path):  # released on close
        pass


def test_a_journal_of_another_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path, "http://127.0.0.1:5000") as j:
        _intent(j)
    with pytest.raises(JournalError, match=r"belongs to registry http://127\.0\.0\.1:5000"):
        _open(path, "http://127.0.0.1:6000")


def test_registry_url_is_stored_without_credentials(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with _open(path, "https://alice:s3cret@Registry.Example.com:443/?token=x") as j:
        _intent(j)
    text = path.read_text()
    assert "s3cret" not in text and "alice" not in text and "token" not in text
    assert read_journal(path).registry == "https://registry.example.com"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
        ("https://u:p@r.example.com/", "https://r.example.com"),
        ("https://r.example.com:443", "https://r.example.com"),
        ("http://r.example.com:80", "http://r.example.com"),
        ("https://[::1]:5000", "https://[::1]:5000"),
    ],
    ids=["slash", "userinfo", "https-default-port", "http-default-port", "ipv6"],
)
def test_the_journal_stores_the_registry_key(url: str, expected: str) -> None:
    assert registry_key(url) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"XDG_STATE_HOME": "/state", "HOME": "/home/u"}, "/state/retention/journal"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/retention/journal"),
        (
            {"XDG_STATE_HOME": "relative", "HOME": "/home/u"},
            "/home/u/.local/state/retention/journal",
        ),
    ],
    ids=["xdg", "home-default", "relative-xdg-ignored"],
)
def test_default_journal_path(env: dict[str, str], expected: str) -> None:
    path = default_journal_path("http://127.0.0.1:5000", "sha256:" + "ab" * 32, env)
    assert path == Path(expected) / "127.0.0.1_5000-abababababab.jsonl"


def test_unwritable_location_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError) as caught:
        _open(blocker / "sub" / "j.jsonl")
    assert "--journal PATH" in caught.value.diagnostics()
