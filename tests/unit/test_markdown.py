"""The Markdown plan (retention/markdown.py), read back with a real Markdown parser: hostile names
stay inside their cell and section, 10,000 deletions stay under GitHub's comment limit, and the
same plan always gives the same text."""

from __future__ import annotations

import html
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from retention.markdown import GITHUB_COMMENT_LIMIT, escape, render_markdown
from retention.plan import Plan
from retention.text import untrusted
from tests.support.plans import NOW, entry, make_plan

HOSTILE = "<script>alert(1)</script>|`x`</details>**b**[l](http://e)\x1b[2J\u202eevil\n| a |"


def _parser() -> MarkdownIt:
    # CommonMark with GFM tables: what GitHub and GitLab render (both allow inline HTML)
    return MarkdownIt("commonmark", {"html": True}).enable("table")


def _digest(i: int) -> str:
    return f"sha256:{i:012x}" + "a" * 52


def _plan(n: int, repos: int = 1, *, tag: str = "t", repo: str = "apps/r") -> Plan:
    entries = [
        entry(f"{repo}{i % repos}", _digest(i), tags=[f"{tag}{i}"], reason=f"rank {i} > 1")
        for i in range(n)
    ]
    return make_plan(entries)


def _rows(tokens: list[Token]) -> list[list[str]]:
    """Each body row of every table as the text of its cells (inline children joined)."""
    rows: list[list[str]] = []
    in_body = False
    for i, t in enumerate(tokens):
        if t.type == "tbody_open":
            in_body = True
        elif t.type == "tbody_close":
            in_body = False
        elif in_body and t.type == "tr_open":
            rows.append([])
        elif in_body and t.type == "inline" and tokens[i - 1].type == "td_open":
            rows[-1].append("".join(c.content for c in (t.children or []) if c.type == "text"))
    return rows


def _deletion_rows(text: str) -> list[list[str]]:
    return [r for r in _rows(_parser().parse(text)) if len(r) == 6]


ESCAPES = [
    ("plain", "latest", "latest"),
    ("pipe", "a|b", "a\\|b"),
    ("backtick", "`x`", "\\`x\\`"),
    ("html", "<b>&", "&lt;b&gt;&amp;"),
    ("emphasis", "*a*_b_", "\\*a\\*\\_b\\_"),
    ("link", "[a](b)", "\\[a\\]\\(b\\)"),
    ("autolink", "http://a.b", "http\\://a\\.b"),
    ("mention", "@team", "\\@team"),
    ("math", "$x$", "\\$x\\$"),
    ("leading-list-marker", "- a-b", "\\- a-b"),
    ("leading-heading", "# a#b", "\\# a#b"),
    ("leading-quote", "> a", "&gt; a"),
    ("escape-char", "\x1b", "\\\\x1b"),
    ("bidi", "\u202e", "\\\\u202e"),
    ("newline", "a\nb", "a\\\\x0ab"),
    ("backslash", "a\\b", "a\\\\\\\\b"),
]


@pytest.mark.parametrize(("raw", "escaped"), [c[1:] for c in ESCAPES], ids=[c[0] for c in ESCAPES])
def test_escape_for_markdown(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("<x>", "&lt;x&gt;"), ("a|*b*", "a|*b*"), ("\"'&", "&quot;&#39;&amp;"), ("\x1b", "\\x1b")],
    ids=["tags", "markdown-untouched", "quotes-and-amp", "control"],
)
def test_escape_for_html(raw: str, escaped: str) -> None:
    assert escape(raw, "html") == escaped


@given(st.text(max_size=40))
def test_any_text_renders_as_itself_shown_escaped_in_one_cell(text: str) -> None:
    doc = f"| a |\n|---|\n| {escape(text)} |\n"
    rows = _rows(_parser().parse(doc))
    assert rows == [[untrusted(text).strip()]] or (rows == [[""]] and not untrusted(text).strip())


@given(st.text(max_size=40))
def test_any_text_renders_as_itself_in_one_list_item(text: str) -> None:
    tokens = _parser().parse(f"- {escape(text)}\n")
    kinds = [t.type for t in tokens]
    shown = untrusted(text).strip()
    texts = [
        "".join(c.content for c in t.children or [] if c.type == "text")
        for t in tokens
        if t.type == "inline"
    ]
    assert kinds.count("list_item_open") == 1
    assert texts == ([shown] if shown else [])


@given(st.text(alphabet="#+-=>*_`[]()!|~$:.@<&\\1. \x1b", max_size=20))
def test_markdown_punctuation_renders_as_itself(text: str) -> None:
    doc = f"| a |\n|---|\n| {escape(text)} |\n"
    assert _rows(_parser().parse(doc)) == [[untrusted(text).strip()]]


@given(st.text(max_size=40))
def test_any_text_in_html_decodes_to_itself_shown_escaped(text: str) -> None:
    assert html.unescape(escape(text, "html")) == untrusted(text)


def test_a_hostile_tag_stays_in_its_cell() -> None:
    plan = make_plan([entry("apps/web", _digest(1), tags=[HOSTILE], reason=f"keeps {HOSTILE}")])
    text = render_markdown(plan, now=NOW).text
    rows = _deletion_rows(text)
    assert len(rows) == 1
    tags, digest, age, size, rule, reason = rows[0]
    assert tags == untrusted(HOSTILE)
    assert reason == f"keeps {untrusted(HOSTILE)}"
    assert (digest, age, size, rule) == ("sha256:" + "0" * 11 + "1", "unknown", "100 B", "rule")
    rendered = _parser().render(text)
    assert "<script" not in rendered
    assert "\x1b" not in text and "\u202e" not in text


def test_a_hostile_repository_cannot_close_its_section() -> None:
    name = "apps/</summary></details><script>x</script>\u202e"
    plan = make_plan(
        [entry(name, _digest(1), tags=["a"]), entry("apps/zz", _digest(2), tags=["b"])]
    )
    text = render_markdown(plan, now=NOW).text
    tokens = _parser().parse(text)
    blocks = [t.content for t in tokens if t.type == "html_block"]
    # our own HTML only: each section opens with one <details><summary> line and closes once
    assert len(blocks) == 4
    opening, closing = blocks[0], blocks[1]
    assert closing.strip() == "</details>"
    assert opening.count("<details>") == 1 and opening.count("</summary>") == 1
    summary = opening.removeprefix("<details><summary>").split("</summary>")[0]
    assert html.unescape(summary).startswith(untrusted(name) + ": 1 image")
    assert "<script" not in _parser().render(text)
    assert [r[0] for r in _deletion_rows(text)] == ["a", "b"]
    assert [t.content for t in tokens if t.type == "html_inline"] == []


def test_header_and_summary_table() -> None:
    plan = _plan(3, 2)
    text = render_markdown(plan, now=NOW).text
    assert text.startswith("### retention plan: 3 images (3 tags) to delete in 2 repositories")
    rows = _rows(_parser().parse(text))
    header = {r[0]: r[1] for r in rows if len(r) == 2}
    assert header["registry"] == "http://127.0.0.1:5000"
    assert header["policy"] == "policy.yaml"
    assert header["policy sha256"] == "0" * 64
    assert header["generated at"] == "2026-11-27T12:00:00Z"
    summary = [r for r in rows if len(r) == 4]
    assert summary == [
        ["apps/r0", "2", "2", "200 B"],
        ["apps/r1", "1", "1", "100 B"],
        ["total", "3", "3", "300 B"],
    ]


def test_rows_show_short_digest_age_and_platform_manifests_under_their_index() -> None:
    index = replace(
        entry(
            "apps/m", _digest(9), tags=["i"], media_type="application/vnd.oci.image.index.v1+json"
        ),
        created=NOW - timedelta(days=40),
    )
    child = entry("apps/m", _digest(1), parent=_digest(9), reason="platform of a deleted index")
    text = render_markdown(make_plan([index, child]), now=NOW).text
    rows = _deletion_rows(text)
    assert rows[0][:3] == ["i", f"sha256:{'0' * 11}9 (index)", "40 days"]
    assert rows[1][0] == f"↳ (platform of sha256:{'0' * 11}9)"
    assert rows[1][4] == ""


def test_a_repository_section_is_cut_with_a_count() -> None:
    rendered = render_markdown(_plan(150), now=NOW, per_repository=100)
    assert len(_deletion_rows(rendered.text)) == 100
    assert "… and 50 more entries not shown here." in rendered.text
    assert rendered.omitted == 50
    assert "**50 of 150 deletions are not listed here**" in rendered.text


def test_ten_thousand_deletions_fit_a_github_comment() -> None:
    plan = _plan(10_000, 40, tag="main-" + "a" * 40 + "-")
    plan = replace(plan, warnings=tuple(f"warning {i}: " + "w" * 300 for i in range(500)))
    rendered = render_markdown(plan, now=NOW)
    assert len(rendered.text) <= 60_000 < GITHUB_COMMENT_LIMIT
    rows = _deletion_rows(rendered.text)
    assert 0 < len(rows) == 10_000 - rendered.omitted
    assert f"**{rendered.omitted:,} of 10,000 deletions are not listed here**" in rendered.text
    tokens = _parser().parse(rendered.text)
    blocks = [t.content.strip() for t in tokens if t.type == "html_block"]
    assert blocks.count("</details>") == sum(b.startswith("<details>") for b in blocks) > 0
    assert "more warnings (see the plan file)" in rendered.text


def test_the_limit_holds_for_long_hostile_names() -> None:
    long = ("<&>\x1b" * 2_000)[:8_000]
    plan = make_plan(
        [entry(f"r{i}/{long}", _digest(i), tags=[long], reason=long) for i in range(300)]
    )
    plan = replace(plan, registry=long, policy_path=long, warnings=(long,) * 100)
    rendered = render_markdown(plan, now=NOW, limit=20_000)
    assert len(rendered.text) <= 20_000
    assert rendered.omitted > 0


@pytest.mark.parametrize("limit", [10_000, 30_000, GITHUB_COMMENT_LIMIT], ids=str)
def test_every_listed_or_omitted_entry_is_counted(limit: int) -> None:
    rendered = render_markdown(_plan(3_000, 7), now=NOW, limit=limit)
    assert len(rendered.text) <= limit
    assert len(_deletion_rows(rendered.text)) + rendered.omitted == 3_000


def test_no_changes() -> None:
    text = render_markdown(make_plan([]), now=NOW).text
    assert text.startswith("### retention plan: no changes\n")
    assert "<details>" not in text


def test_deterministic() -> None:
    plan = _plan(500, 5)
    shuffled = replace(plan, deletions=tuple(reversed(plan.deletions)))
    first = render_markdown(plan, now=NOW).text
    assert render_markdown(plan, now=NOW).text == first
    # the order in which entries were listed does not matter
    assert render_markdown(shuffled, now=NOW).text == first


def test_every_repository_gets_the_same_share_of_rows() -> None:
    rendered = render_markdown(_plan(10_000, 40), now=NOW)
    tokens = _parser().parse(rendered.text)
    sections = [t for t in tokens if t.type == "html_block" and t.content.startswith("<details>")]
    assert len(sections) == 40
    counts = rendered.text.count("… and ")
    assert counts == 40  # each section cut, with its count
    per_section = (10_000 - rendered.omitted) // 40
    assert per_section * 40 == 10_000 - rendered.omitted and per_section >= 5


def test_the_header_shows_evaluated_at_and_the_inventory_source() -> None:
    later = replace(_plan(1), evaluated_at=NOW - timedelta(days=3), inventory_source="storage")
    rows = {r[0]: r[1] for r in _rows(_parser().parse(render_markdown(later, now=NOW).text))}
    assert rows["evaluated at"] == "2026-11-24T12:00:00Z"
    assert rows["inventory"] == "storage"
    base = {r[0]: r[1] for r in _rows(_parser().parse(render_markdown(_plan(1), now=NOW).text))}
    assert base["evaluated at"] == base["generated at"] and base["inventory"] == "api"
