"""Untags in the plan file, its text and its Markdown (docs/decisions.md, "Untag: policy and
plan"): written only when there are some, read back equal, refused when malformed or when they
contradict the rest of the plan, and every registry string escaped."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from markdown_it import MarkdownIt

from retention.errors import PlanError
from retention.markdown import render_markdown
from retention.plan import Plan, Untag, from_json, render_text, to_document, to_json
from retention.text import untrusted
from tests.support.plans import NOW, entry, make_plan

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
HOSTILE = "<script>alert(1)</script>|`x`</details>**b**[l](http://e)\x1b[2J\u202eevil\n| a |"


def _with_untags(*untags: Untag, methods: tuple[tuple[str, str], ...] = ()) -> Plan:
    plan = make_plan([entry("apps/web", A, tags=["old"])], [entry("apps/web", B, tags=["latest"])])
    return replace(
        plan,
        evaluated_at=NOW,  # what a plan read back from its file has
        untags=tuple(sorted(untags, key=lambda u: (u.repository, u.tag))),
        untag_methods=methods,
        summary=replace(plan.summary, tags_untagged=len(untags)),
    )


SHARED = Untag(
    "apps/web", "build-7", B, "ci", "its image is kept by `latest`; rule `ci`: rank 3 > 2"
)
DANGLING = Untag("apps/web", "ghost", None, "ci", "a dangling tag: listed, its manifest gone")
OTHER = Untag("apps/api", "pr-1", C, "ci", "its image is kept by `main`; rule `ci`: rank 2 > 1")


def test_a_plan_without_untags_writes_none_of_their_keys() -> None:
    doc = json.loads(to_json(_with_untags()))
    assert "untags" not in doc and "untag_methods" not in doc
    assert "tags_untagged" not in doc["summary"]


def test_untags_are_written_sorted_with_their_count_and_methods() -> None:
    plan = _with_untags(SHARED, OTHER, DANGLING, methods=(("apps/web", "throw-away"),))
    doc = json.loads(to_json(plan))
    assert [(u["repository"], u["tag"]) for u in doc["untags"]] == [
        ("apps/api", "pr-1"),
        ("apps/web", "build-7"),
        ("apps/web", "ghost"),
    ]
    assert doc["untags"][2] == {
        "repository": "apps/web",
        "tag": "ghost",
        "digest": None,
        "rule": "ci",
        "reason": "a dangling tag: listed, its manifest gone",
    }
    assert doc["summary"]["tags_untagged"] == 3
    assert doc["untag_methods"] == {"apps/web": "throw-away"}
    assert list(doc) == sorted(doc)


@pytest.mark.parametrize(
    "methods",
    [(), (("apps/api", "delete-tag"), ("apps/web", "throw-away"))],
    ids=["no-methods", "methods"],
)
def test_round_trip_and_the_standard_encoder(methods: tuple[tuple[str, str], ...]) -> None:
    plan = _with_untags(SHARED, DANGLING, OTHER, methods=methods)
    text = to_json(plan)
    reference = json.dumps(to_document(plan), sort_keys=True, indent=2, ensure_ascii=False)
    assert text == reference + "\n"
    again = from_json(text, "plan.json")
    assert again == plan
    assert to_json(again) == text


def test_methods_alone_are_written_and_read_back() -> None:
    plan = _with_untags(methods=(("apps/web", "delete-tag"),))
    doc = json.loads(to_json(plan))
    assert doc["untag_methods"] == {"apps/web": "delete-tag"} and "untags" not in doc
    assert from_json(to_json(plan), "plan.json") == plan


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(to_json(_with_untags(SHARED, DANGLING)))
    return doc


def _edit(change: Any) -> str:
    doc = _doc()
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            _edit(lambda d: d["untags"][0].update(digest="sha256:12")),
            "$.untags[0].digest: 'sha256:12' is not a manifest digest",
            id="bad-digest",
        ),
        pytest.param(
            _edit(lambda d: d["untags"][0].update(tag="../../v2/x")),
            "$.untags[0].tag: '../../v2/x' is not a tag name",
            id="tag-outside-the-grammar",
        ),
        pytest.param(
            _edit(lambda d: d["untags"][1].pop("rule")),
            "$.untags[1]: 'rule' is a required property",
            id="missing-rule",
        ),
        pytest.param(
            _edit(lambda d: d["untags"][0].update(extra=1)),
            "$.untags[0]: Additional properties are not allowed",
            id="unknown-field",
        ),
        pytest.param(
            _edit(lambda d: d.update(untags={"tag": "x"})),
            "$.untags: {'tag': 'x'} is not of type 'array'",
            id="not-a-list",
        ),
        pytest.param(
            _edit(lambda d: d.update(untag_methods={"apps/web": "rm -rf"})),
            "$.untag_methods.apps/web: 'rm -rf' is not one of ['delete-tag', 'throw-away']",
            id="unknown-method",
        ),
        pytest.param(
            _edit(lambda d: d.update(untag_methods=[["apps/web", "delete-tag"]])),
            "$.untag_methods: [['apps/web', 'delete-tag']] is not of type 'object'",
            id="methods-not-an-object",
        ),
        pytest.param(
            _edit(lambda d: d["summary"].update(tags_untagged=-2)),
            "$.summary.tags_untagged: -2 is less than the minimum of 0",
            id="negative-count",
        ),
        pytest.param(
            _edit(lambda d: d["untags"].append(dict(d["untags"][0]))),
            "$.untags: tag apps/web:build-7 is listed twice",
            id="listed-twice",
        ),
        pytest.param(
            _edit(lambda d: d["untags"][0].update(tag="old")),
            "$.untags: tag apps/web:old is listed both as untagged and as deleted",
            id="also-deleted",
        ),
        pytest.param(
            _edit(lambda d: d["untags"][0].update(tag="latest")),
            "$.untags: tag apps/web:latest is listed both as untagged and as kept",
            id="also-kept",
        ),
        pytest.param(
            _edit(lambda d: d["untags"][0].update(digest=A)),
            f"$.untags: tag apps/web:build-7 is untagged from {A}, which the plan deletes",
            id="image-deleted",
        ),
    ],
)
def test_from_json_refuses(text: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        from_json(text, "plan.json")
    assert f"plan.json: {message}" in info.value.message
    assert info.value.hint is not None and "retention plan" in info.value.hint


def test_an_old_plan_without_untag_keys_loads_with_none() -> None:
    doc = _doc()
    del doc["untags"], doc["summary"]["tags_untagged"]
    plan = from_json(json.dumps(doc), "plan.json")
    assert plan.untags == () and plan.untag_methods == () and plan.summary.tags_untagged == 0


def test_text_lists_untags_under_their_repository_and_in_the_closing_line() -> None:
    plan = _with_untags(SHARED, DANGLING, OTHER, methods=(("apps/web", "throw-away"),))
    lines = render_text(plan, now=NOW).splitlines()
    assert "apps/api: 0 images (0 tags) to delete, 1 tag to untag" in lines
    assert (
        "apps/web: 1 image (1 tag) to delete, 2 tags to untag (by a throw-away manifest)" in lines
    )
    at = lines.index(f"  ~ build-7  {B}")
    assert lines[at + 1] == "      untag: its image is kept by `latest`; rule `ci`: rank 3 > 2"
    at = lines.index("  ~ ghost  (dangling: no image)")
    assert lines[at + 1] == "      untag: rule `ci`: a dangling tag: listed, its manifest gone"
    assert lines[-1] == (
        "Plan: 1 image (1 tag) to delete in 1 repository, ~100 B reclaimable after garbage "
        "collection; 3 tags to untag in 2 repositories, their images kept."
    )


def test_text_of_a_plan_that_only_untags_is_not_no_changes() -> None:
    plan = replace(_with_untags(OTHER), deletions=())
    assert render_text(plan, now=NOW).splitlines()[-1] == (
        "Plan: 1 tag to untag in 1 repository, their images kept; nothing to delete."
    )


def test_text_escapes_a_hostile_tag_and_reason() -> None:
    hostile = Untag("apps/web", "t", B, "ci", HOSTILE)
    plan = replace(_with_untags(hostile), untags=(replace(hostile, repository=HOSTILE),))
    text = render_text(plan, now=NOW)
    assert "\x1b" not in text and "\u202e" not in text
    assert untrusted(HOSTILE) in text


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable("table")


def _untag_rows(text: str) -> list[list[str]]:
    """The body rows of the untag table (five cells), each cell's text."""
    tokens = _parser().parse(text)
    rows: list[list[str]] = []
    in_body = False
    for i, t in enumerate(tokens):
        if t.type in ("tbody_open", "tbody_close"):
            in_body = t.type == "tbody_open"
        elif in_body and t.type == "tr_open":
            rows.append([])
        elif in_body and t.type == "inline" and tokens[i - 1].type == "td_open":
            rows[-1].append("".join(c.content for c in (t.children or []) if c.type == "text"))
    return [r for r in rows if len(r) == 5]


def test_markdown_has_an_untag_section_with_hostile_names_kept_in_their_cells() -> None:
    hostile = Untag(HOSTILE, "build-7", B, HOSTILE, f"kept by {HOSTILE}")
    plan = _with_untags(hostile, DANGLING, methods=(("apps/web", "delete-tag"),))
    text = render_markdown(plan, now=NOW).text
    assert text.splitlines()[0] == (
        "### retention plan: 1 image (1 tag) to delete in 1 repository, ~100 B reclaimable "
        "after garbage collection; 2 tags to untag"
    )
    assert "#### Untags" in text and "2 tags to untag in 2 repositories</summary>" in text
    rows = _untag_rows(text)
    assert rows == [
        [untrusted(HOSTILE), "build-7", "sha256:bbbbbbbbbbbb", untrusted(HOSTILE),
         f"kept by {untrusted(HOSTILE)}"],
        ["apps/web (deleted by name)", "ghost", "(dangling: no image)", "ci",
         "a dangling tag: listed, its manifest gone"],
    ]  # fmt: skip
    rendered = _parser().render(text)
    assert "<script" not in rendered
    assert "\x1b" not in text and "\u202e" not in text


def test_markdown_untag_section_is_cut_with_a_count() -> None:
    many = [Untag("apps/web", f"t{i:05}", B, "ci", "x" * 200) for i in range(2000)]
    plan = _with_untags(*many)
    rendered = render_markdown(plan, now=NOW, limit=20_000)
    assert len(rendered.text) <= 20_000
    shown = len(_untag_rows(rendered.text))
    assert 0 < shown < 2000
    assert f"… and {2000 - shown:,} more untags not shown here" in rendered.text


def test_markdown_without_untags_has_no_untag_section() -> None:
    assert "Untags" not in render_markdown(_with_untags(), now=NOW).text
