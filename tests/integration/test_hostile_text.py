"""A registry that sends hostile text (issue 13, items 2, 6 and 7), against the real registry,
through tests/harness/faultproxy.py where the registry itself would not store the text.

Forged output: ESC, CR, C1 (U+009B) and a bidi override (U+202E) in an index's platform, an
unparseable config `created`, a JSON error body, the API version header and a redirect
`Location` never reach stdout or stderr raw, and cannot forge a "latest is deleted" line;
plan.json holds them as `\\u....` escapes. Names outside the grammar are reported once each and
left alone. A `created` in the year 9999 is an unknown age, never rank 1.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import cli
from retention import plan as plan_mod
from tests.harness.faultproxy import Exchange, Fault, FaultProxy, RecordedRequest, Upstream
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher, list_tags, resolve
from tests.support.applykit import manifest_exists, write_policy

DAY = timedelta(days=1)
# What a terminal acts on: C0 controls but LF and TAB, DEL, C1, bidi controls and separators.
RAW = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
# A line that would make `latest` look like a planned deletion in the text plan
FORGED = re.compile(r"^\s*- latest\b", re.MULTILINE)
HOSTILE = "\x1b[2J\r  - latest  sha256:forged\u009b\u202e"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    for stream in (out, err):
        assert RAW.search(stream) is None, repr(RAW.search(stream))
        assert FORGED.search(stream) is None
    return code, out, err


def test_platform_and_created_from_the_registry_are_escaped_in_every_output(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/app"
    pusher.push_image(repo, "latest", created=now - DAY)
    multi = pusher.push_image(
        repo,
        "multi",
        kind="oci-index",
        created=now - 30 * DAY,
        platforms=(f"linux/amd64{HOSTILE}",),
    )
    odd = pusher.push_image(repo, "odd", created=f"yesterday{HOSTILE}")
    policy = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=1, protect=())
    out_path = tmp_path / "plan.json"

    code, out, err = _run(["plan", "-p", str(policy), "-o", str(out_path), "--show-kept"], capsys)
    assert code == 0, err
    assert "\\x1b[2J\\x0d  - latest  sha256:forged\\x9b\\u202e" in out  # shown, escaped
    assert "- multi" in out  # the index is deleted, its platform manifest under it
    text = out_path.read_text(encoding="utf-8")
    assert RAW.search(text) is None
    assert "\\u009b" in text and "\\u202e" in text and "\\u001b" in text
    plan = plan_mod.from_json(text, "plan.json")
    assert {e.digest for e in plan.deletions} == {multi.digest, *(c.digest for c in multi.children)}
    kept = {e.digest: e for e in plan.kept}
    assert kept[odd.digest].reason.endswith(f"(created yesterday{HOSTILE})")  # raw in the model

    code, out, _ = _run(["explain", "-p", str(policy), repo], capsys)
    assert code == 0
    assert "age unknown (created yesterday\\x1b[2J\\x0d" in out

    for fmt in ("text", "csv", "json"):
        code, out, _ = _run(["inventory", "-p", str(policy), "--format", fmt], capsys)
        assert code == 0 and repo in out


def test_error_bodies_headers_and_locations_are_escaped_on_stderr_and_stdout(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{repo_prefix}/app"
    mine = ["--repository", f"{repo_prefix}/.*"]  # not the whole session registry, thrice
    pusher.push_image(repo, "v1", created=datetime.now(UTC) - DAY)
    header_text = "registry/2.0\x1b[2J\x9b"  # a header travels as latin-1: no U+202E in it
    body = json.dumps({"errors": [{"code": "DENIED\x1b", "message": HOSTILE}]}).encode()
    with FaultProxy(registry.url) as proxy:
        policy = write_policy(tmp_path / "p.yaml", proxy.url, repo_prefix, protect=())

        proxy.add(
            Fault(
                "header",
                path=r"^/v2/$",
                times=None,
                header_name="Docker-Distribution-API-Version",
                header_value=header_text,
            )
        )
        code, out, _ = _run(["doctor", "-p", str(policy), "--repository", repo], capsys)
        assert "Docker-Distribution-API-Version header is registry/2.0\\x1b[2J\\x9b" in out
        proxy.clear()

        proxy.add(
            Fault(
                "status",
                path="/tags/list",
                status=400,
                body=body,
                times=None,
                headers={"Content-Type": "application/json"},
            )
        )
        code, _, err = _run(["plan", "-p", str(policy), *mine], capsys)
        assert code == 1
        assert "HTTP 400: \\x1b[2J\\x0d  - latest  sha256:forged\\x9b\\u202e" in err
        assert "DENIED\\x1b" in err
        proxy.clear()

        # a header is sent as latin-1: the first holds the UTF-8 bytes of U+009B and U+202E
        for location in ("ftp://evil\x1b[2J\xc2\x9b\xe2\x80\xae/x", "http://evil/\x9b\x1b[2J"):
            proxy.add(
                Fault("status", path="/blobs/", status=307, times=1, headers={"Location": location})
            )
            code, _, err = _run(["plan", "-p", str(policy), "--no-cache", *mine], capsys)
            assert code == 1
            assert "Location header that is not a UTF-8 URL" in err
            proxy.clear()

        location = "ftp://evil/\x1bc\xc2\x9b\xe2\x80\xae"  # parses: our check refuses it
        proxy.add(Fault("status", path="/blobs/", status=307, headers={"Location": location}))
        code, _, err = _run(["plan", "-p", str(policy), "--no-cache", *mine], capsys)
        assert code == 1
        assert "redirect to a non-http URL" in err
        assert "ftp://evil/\\x1bc\\x9b\\u202e" in err


BAD_REPOSITORIES = ["bad\x1b[2Jrepo", "line\nbreak", "../etc/passwd", "nul\x00", "r" * 300]
BAD_TAGS = ["t\x1b[2J", "t\nlatest", "../x", "n\x00", "t" * 300]


def _add_names(proxy: FaultProxy, key: str, path: str, extra: list[str]) -> None:
    def answer(_request: RecordedRequest, upstream: Upstream) -> Exchange:
        real = upstream()
        doc = json.loads(real.body)
        doc[key] = [*(doc.get(key) or []), *extra, *extra]  # each twice: warned once
        headers = tuple((k, v) for k, v in real.headers if k.lower() != "content-length")
        return Exchange(real.status, headers, json.dumps(doc).encode())

    proxy.add(Fault("respond", path=path, handler=answer, times=None))


def test_names_outside_the_grammar_are_reported_once_and_left_alone(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    repo, other = "team/app", "team/other"
    old = fresh_pusher.push_image(repo, "old", created=now - 9 * DAY)
    fresh_pusher.push_image(repo, "new", created=now - DAY)
    other_old = fresh_pusher.push_image(other, "old", created=now - 9 * DAY, seed=2)
    fresh_pusher.push_image(other, "new", created=now - DAY, seed=3)
    with FaultProxy(fresh_registry.url) as proxy:
        _add_names(proxy, "repositories", r"^/v2/_catalog", BAD_REPOSITORIES)
        _add_names(proxy, "tags", f"^/v2/{repo}/tags/list", BAD_TAGS)
        policy = write_policy(tmp_path / "p.yaml", proxy.url, "team", protect=())
        out_path = tmp_path / "plan.json"

        code, out, err = _run(["plan", "-p", str(policy), "-o", str(out_path)], capsys)
        assert code == 0, err
        plan = plan_mod.from_json(out_path.read_bytes(), "plan.json")
        assert {e.digest for e in plan.deletions} == {old.digest, other_old.digest}
        left_alone = [w for w in plan.warnings if w.endswith("it is left alone")]
        assert len(left_alone) == len(BAD_REPOSITORIES) + len(BAD_TAGS)
        assert 'the catalog lists repository "bad\\x1b[2Jrepo"' in "\n".join(left_alone)
        assert f'tags/list of {repo} lists tag "t\\x0alatest"' in "\n".join(left_alone)
        assert "... (300 characters)" in "\n".join(left_alone)
        for warning in left_alone:
            assert out.count(warning) == 1  # in the text plan's warnings, once
            assert err.count(warning) == 1  # and on stderr as the walk saw it, once

        code, out, _ = _run(["explain", "-p", str(policy), repo], capsys)
        assert code == 0
        assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == [
            f"{repo}:new",
            f"{repo}:old",
        ]

        # apply cannot check what a tag outside the grammar points at: it leaves that
        # repository alone (the entry fails, exit 3) and deletes in the others
        code, _, err = _run(["apply", "--yes", str(out_path)], capsys)
        assert code == 3, err
        assert 'holds an invalid tag "t\\x1b[2J" (outside the distribution grammar' in err
    assert manifest_exists(fresh_registry.url, repo, old.digest)
    assert not manifest_exists(fresh_registry.url, other, other_old.digest)
    assert list_tags(fresh_registry.url, repo) == ["new", "old"]


def test_init_leaves_names_outside_the_grammar_out_of_the_starter(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_pusher.push_image("apps/api", ["latest", "main-abcdef1"])
    with FaultProxy(fresh_registry.url) as proxy:
        _add_names(proxy, "repositories", r"^/v2/_catalog", BAD_REPOSITORIES)
        _add_names(proxy, "tags", "^/v2/apps/api/tags/list", BAD_TAGS)
        code, out, err = _run(["init", "--registry", proxy.url], capsys)
    assert code == 0, err
    assert out.startswith("# Starter retention policy for")
    assert err.count("it is left alone") == len(BAD_REPOSITORIES) + len(BAD_TAGS)
    assert "read 1 repositories and 2 tags" in err


def test_a_created_in_the_year_9999_is_an_unknown_age_not_the_newest(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/app"
    future = pusher.push_image(repo, "future", created=datetime(9999, 1, 1, tzinfo=UTC))
    new = pusher.push_image(repo, "new", created=now - DAY)
    old = pusher.push_image(repo, "old", created=now - 9 * DAY)
    policy = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=1, protect=())
    out_path = tmp_path / "plan.json"

    code, out, err = _run(["plan", "-p", str(policy), "-o", str(out_path)], capsys)
    assert code == 0, err
    plan = plan_mod.from_json(out_path.read_bytes(), "plan.json")
    assert [e.digest for e in plan.deletions] == [old.digest]  # not `new`
    assert any("created more than 1 day after the evaluation time" in w for w in plan.warnings)

    code, out, _ = _run(["explain", "-p", str(policy), f"{repo}:future"], capsys)
    assert code == 0
    assert "0 seconds" not in out
    assert "age unknown" in out
    assert "created 9999-01-01T00:00:00Z is in the future" in out
    assert "rank 1" not in out
    assert resolve(registry.url, repo, "future") == future.digest
    assert resolve(registry.url, repo, "new") == new.digest
