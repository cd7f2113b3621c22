"""The plan as GitHub/GitLab-flavoured Markdown, for a merge-request comment or a CI step summary.

Pure: no I/O, no clock (`now` is a parameter). Every string from a registry or a policy goes
through `escape()`, which shows control characters escaped (`retention.text.untrusted`) and then
escapes Markdown and HTML, so no name can break out of its table cell or `<details>` section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from retention.oci import INDEX_TYPES, format_time
from retention.plan import Entry, Plan, Untag, human_bytes
from retention.text import untrusted

# GitHub refuses a comment body over 65,536 characters; the default leaves room for the text a
# CI job puts around the plan (a heading, a link to the job).
GITHUB_COMMENT_LIMIT: Final = 65_536
DEFAULT_LIMIT: Final = 60_000
DEFAULT_PER_REPOSITORY: Final = 100
_MAX_WARNING_CHARS: Final = 500  # escaped characters of one warning
_MAX_NAME_CHARS: Final = 300  # escaped characters of a name, a URL or a reason
_SHORT_DIGEST: Final = 12  # hex digits after `sha256:`, as `docker images` shows

# HTML's special characters, as entities (CommonMark 6.6 passes entities through; inside an HTML
# block, such as the `<summary>` line, they are the only escaping that works).
_HTML: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
# CommonMark 2.4: any ASCII punctuation may be backslash-escaped; GFM tables also honour `\|`.
# These are the ones that open something anywhere in a line: code spans, emphasis, links and
# images, cells, strikethrough, GitHub's math (`$`), and the autolinks that `:`, `.` and `@` start.
_MARKDOWN_PUNCTUATION: Final = frozenset("\\`*_[]()!|~$:.@")
# ...and these only at the start of a block (a list item's text): headings, lists, quotes, rules
_LINE_START: Final = frozenset("#+-=>")
_PIECE: Final = re.compile(r"\\.|&#?\w+;|.", re.DOTALL)


def escape(text: str, context: Literal["markdown", "html"] = "markdown") -> str:
    """`text` safe to place in Markdown inline text (a table cell, a list item) or, with
    `context="html"`, inside raw HTML such as a `<summary>` element.

    Controls, C1, bidi and format characters are first shown as `\\x..`/`\\u....` (and a
    backslash doubled) by `untrusted()`, so the result is one line. Then `& < > " '` become
    entities; in Markdown every other ASCII punctuation character is backslash-escaped, which
    renders as the character itself and can open no code span, emphasis, link or cell.
    """
    shown = untrusted(text)
    out: list[str] = []
    for i, char in enumerate(shown):
        if char in _HTML:
            out.append(_HTML[char])
        elif context == "markdown" and (
            char in _MARKDOWN_PUNCTUATION or (i == 0 and char in _LINE_START)
        ):
            out.append("\\" + char)  # (`1.` and `1)` cannot start a list: `.` `)` are escaped)
        else:
            out.append(char)
    return "".join(out)


def _clip(text: str, most: int, context: Literal["markdown", "html"] = "markdown") -> str:
    """`escape(text)` cut to at most `most` characters (plus `…`), never inside an escape."""
    escaped = escape(text, context)
    if len(escaped) <= most:
        return escaped
    out: list[str] = []
    used = 0
    for match in _PIECE.finditer(escaped):
        piece = match.group()
        if used + len(piece) > most:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + "…"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The Markdown and how many deletions it does not list (0: every one is listed)."""

    text: str
    omitted: int


def render_markdown(
    plan: Plan,
    *,
    now: datetime,
    limit: int = DEFAULT_LIMIT,
    per_repository: int = DEFAULT_PER_REPOSITORY,
) -> Rendered:
    """The plan as Markdown of at most `limit` characters.

    A header (registry, policy and its sha256, times), a summary table per repository, per
    repository a collapsible `<details>` section with one row per deletion (at most
    `per_repository`, then a count of the rest), the untags in a section of their own (within a
    sixth of `limit`), and the warnings. When the sections do not fit in `limit`, later entries
    are left out and the text says how many. Deterministic.
    """
    if limit < 10_000:
        raise ValueError("a Markdown plan needs a limit of at least 10,000 characters")
    by_repo: dict[str, list[Entry]] = {}
    for e in plan.deletions:
        by_repo.setdefault(e.repository, []).append(e)
    # the summary table and the warnings each get a share of the limit; the sections the rest
    head = "".join(_header(plan)) + "".join(_summary_table(plan, by_repo, limit // 3))
    warnings = "".join(_warnings(plan, limit // 4))
    untags = "".join(_untags(plan, limit // 6, per_repository))
    total = len(plan.deletions)
    # the closing note is at most this long; reserve it before the sections take the budget
    reserve = len(_omitted_note(total, total, per_repository)) + 2
    budget = limit - len(head) - len(warnings) - len(untags) - reserve
    drafts = [_Draft.of(repo, by_repo[repo], now, per_repository) for repo in sorted(by_repo)]
    # the same number of rows for every repository, as many as fit: each gets its share
    rows = _most_rows(drafts, per_repository, budget)
    sections: list[str] = []
    listed = 0
    for draft in drafts:
        section, shown = draft.render(rows if rows is not None else per_repository, budget)
        if section is None:
            break  # (only without a common number of rows: not even every opening fits)
        sections.append(section)
        budget -= len(section)
        listed += shown
    omitted = total - listed
    body = head
    if sections:
        body += "\n#### Deletions\n\n" + "".join(sections)
    if omitted:
        body += _omitted_note(omitted, total, per_repository)
    body += untags + warnings
    assert len(body) <= limit, (len(body), limit)
    return Rendered(text=body, omitted=omitted)


def _header(plan: Plan) -> Iterator[str]:
    s = plan.summary
    parts = []
    if plan.deletions:
        repos = len({e.repository for e in plan.deletions})
        parts.append(
            f"{_count(s.images_deleted, 'image')} ({_count(s.tags_deleted, 'tag')}) to delete in "
            f"{_count(repos, 'repository', 'repositories')}, "
            f"~{human_bytes(s.bytes_reclaimable)} reclaimable after garbage collection"
        )
    if plan.untags:
        parts.append(f"{_count(len(plan.untags), 'tag')} to untag")
    title = "; ".join(parts) or "no changes"
    yield f"### retention plan: {title}\n\n"
    yield "| | |\n|---|---|\n"
    yield f"| registry | {_clip(plan.registry, _MAX_NAME_CHARS)} |\n"
    yield f"| policy | {_clip(plan.policy_path, _MAX_NAME_CHARS)} |\n"
    yield f"| policy sha256 | {_clip(plan.policy_sha256, _MAX_NAME_CHARS)} |\n"
    yield f"| generated at | {format_time(plan.generated_at)} |\n"
    yield f"| evaluated at | {format_time(plan.as_of)} |\n"
    yield f"| inventory | {_clip(plan.inventory_source, _MAX_NAME_CHARS)} |\n"
    yield (
        f"| registry holds | {_count(s.repositories, 'repository', 'repositories')}, "
        f"{_count(s.tags, 'tag')}, {_count(s.images, 'image')} |\n"
    )
    if not s.complete:
        yield "| note | the inventory covers part of the registry: bytes are an upper bound |\n"


def _summary_table(plan: Plan, by_repo: dict[str, list[Entry]], budget: int) -> Iterator[str]:
    if not by_repo:
        return
    s = plan.summary
    tags = sum(len(e.tags) for e in plan.deletions)
    total = (
        f"| **total** | {len(plan.deletions):,} | {tags:,} | "
        f"{human_bytes(sum(e.size for e in plan.deletions))} |\n"
        f"\nSizes count each image's manifest, config and layers; garbage collection frees "
        f"~{human_bytes(s.bytes_reclaimable)}: the blobs no kept image uses, each counted once.\n"
    )
    head = "\n| repository | images | tags | size |\n|---|--:|--:|--:|\n"
    budget -= len(head) + len(total) + 200  # 200: the "more repositories" row
    yield head
    names = sorted(by_repo)
    shown = 0
    for repo in names:
        entries = by_repo[repo]
        row = (
            f"| {_clip(repo, _MAX_NAME_CHARS)} | {len(entries):,} | "
            f"{sum(len(e.tags) for e in entries):,} | "
            f"{human_bytes(sum(e.size for e in entries))} |\n"
        )
        if len(row) > budget:
            break
        budget -= len(row)
        shown += 1
        yield row
    if shown < len(names):
        rest = names[shown:]
        images = sum(len(by_repo[r]) for r in rest)
        rest_tags = sum(len(e.tags) for r in rest for e in by_repo[r])
        size = sum(e.size for r in rest for e in by_repo[r])
        yield (
            f"| … {_count(len(rest), 'more repository', 'more repositories')} | {images:,} | "
            f"{rest_tags:,} | {human_bytes(size)} |\n"
        )
    yield total


_TABLE_HEAD: Final = "| tags | digest | age | size | rule | reason |\n|---|---|--:|--:|---|---|\n"


@dataclass(frozen=True, slots=True)
class _Draft:
    """One repository's `<details>` section before it is cut to size: its opening and the first
    `per_repository` rows."""

    opening: str
    rows: tuple[str, ...]
    entries: int

    @classmethod
    def of(cls, repo: str, entries: list[Entry], now: datetime, per_repository: int) -> _Draft:
        tags = sum(len(e.tags) for e in entries)
        size = human_bytes(sum(e.size for e in entries))
        opening = (
            f"<details><summary>{_clip(repo, _MAX_NAME_CHARS, 'html')}: "
            f"{_count(len(entries), 'image')} "
            f"({_count(tags, 'tag')}), {size}</summary>\n\n" + _TABLE_HEAD
        )
        rows: list[str] = []
        for e, depth in _ordered(entries):
            if len(rows) >= per_repository:
                break
            rows.append(_row(e, depth, now))
        return cls(opening, tuple(rows), len(entries))

    def size(self, rows: int) -> int:
        shown = min(rows, len(self.rows))
        return (
            len(self.opening)
            + sum(len(r) for r in self.rows[:shown])
            + len(_closing(self.entries - shown))
        )

    def render(self, rows: int, budget: int) -> tuple[str | None, int]:
        """At most `rows` rows, as many as fit `budget`, and how many; None when not even the
        opening fits."""
        shown = min(rows, len(self.rows))
        while shown > 0 and self.size(shown) > budget:
            shown -= 1
        if self.size(shown) > budget:
            return None, 0
        return self.opening + "".join(self.rows[:shown]) + _closing(self.entries - shown), shown


def _most_rows(drafts: list[_Draft], per_repository: int, budget: int) -> int | None:
    """The largest number of rows per repository (at least 1) with which every section fits
    `budget`; None when not even one row each does."""

    def fits(rows: int) -> bool:
        return sum(d.size(rows) for d in drafts) <= budget

    if not drafts or not fits(1):
        return None
    low, high = 1, per_repository
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _closing(hidden: int) -> str:
    more = (
        f"\n… and {_count(hidden, 'more entry', 'more entries')} not shown here.\n"
        if hidden
        else ""
    )
    return f"{more}\n</details>\n\n"


def _row(e: Entry, depth: int, now: datetime) -> str:
    if e.tags:
        tags = ", ".join(_clip(t, _MAX_NAME_CHARS) for t in e.tags[:10])
        if len(e.tags) > 10:
            tags += f", … {len(e.tags) - 10:,} more"
    elif e.parent is not None:
        tags = f"(platform of {_clip(_short(e.parent), _MAX_NAME_CHARS)})"
    else:
        tags = "(untagged)"
    if depth:
        tags = "↳ " * depth + tags
    kind = " (index)" if e.media_type in INDEX_TYPES else ""
    rule = _clip(e.rule, _MAX_NAME_CHARS) if e.rule else ""
    return (
        f"| {tags} | {_clip(_short(e.digest), _MAX_NAME_CHARS)}{kind} | {_age(e.created, now)} | "
        f"{human_bytes(e.size)} | {rule} | {_clip(e.reason, _MAX_NAME_CHARS)} |\n"
    )


def _ordered(entries: list[Entry]) -> Iterator[tuple[Entry, int]]:
    """As the text plan orders them: tagged images by first tag, then untagged; each platform
    manifest right under its index."""
    digests = {e.digest for e in entries}
    children: dict[str, list[Entry]] = {}
    for e in entries:
        if e.parent is not None and e.parent in digests:
            children.setdefault(e.parent, []).append(e)
    tops = [e for e in entries if e.parent is None or e.parent not in digests]
    tops.sort(key=lambda e: (not e.tags, e.tags[0] if e.tags else "", e.digest))
    seen: set[str] = set()

    def walk(e: Entry, depth: int) -> Iterator[tuple[Entry, int]]:
        seen.add(e.digest)
        yield e, depth
        for child in children.get(e.digest, []):
            if child.digest not in seen:
                yield from walk(child, depth + 1)

    for e in tops:
        yield from walk(e, 0)


def _omitted_note(omitted: int, total: int, per_repository: int) -> str:
    return (
        f"\n> **{omitted:,} of {_count(total, 'deletion')} are not listed here** (at most "
        f"{per_repository:,} per repository, and the whole plan within a comment's size limit). "
        "`retention show PLAN.json` lists every one.\n"
    )


_UNTAG_HEAD: Final = "| repository | tag | image | rule | reason |\n|---|---|---|---|---|\n"
_METHODS: Final = {"delete-tag": "deleted by name", "throw-away": "by a throw-away manifest"}


def _untags(plan: Plan, budget: int, per_repository: int) -> Iterator[str]:
    """The tags the plan removes alone, in one collapsible table: at most `per_repository` rows
    per repository, as many as fit `budget`, then how many are not shown."""
    if not plan.untags:
        return
    repos = len({u.repository for u in plan.untags})
    head = (
        "\n#### Untags\n\nThese tags are removed alone; the images they point at stay "
        "(`settings.untag`).\n\n"
        f"<details><summary>{_count(len(plan.untags), 'tag')} to untag in "
        f"{_count(repos, 'repository', 'repositories')}</summary>\n\n" + _UNTAG_HEAD
    )
    rows: list[str] = []
    room = budget - len(head) - 200  # 200: the "more untags" line and the closing
    per_repo: dict[str, int] = {}
    methods = dict(plan.untag_methods)
    for u in plan.untags:
        row = _untag_row(u, methods)
        if per_repo.get(u.repository, 0) >= per_repository or len(row) > room:
            continue
        per_repo[u.repository] = per_repo.get(u.repository, 0) + 1
        room -= len(row)
        rows.append(row)
    yield head + "".join(rows)
    hidden = len(plan.untags) - len(rows)
    if hidden:
        yield f"\n… and {_count(hidden, 'more untag')} not shown here (see the plan file).\n"
    yield "\n</details>\n"


def _untag_row(u: Untag, methods: dict[str, str]) -> str:
    image = "(dangling: no image)" if u.digest is None else _clip(_short(u.digest), 80)
    how = _METHODS.get(methods.get(u.repository, ""))
    repo = _clip(u.repository, _MAX_NAME_CHARS) + (f" ({how})" if how else "")
    rule = _clip(u.rule, _MAX_NAME_CHARS) if u.rule else ""
    return (
        f"| {repo} | {_clip(u.tag, _MAX_NAME_CHARS)} | {image} | {rule} | "
        f"{_clip(u.reason, _MAX_NAME_CHARS)} |\n"
    )


def _warnings(plan: Plan, budget: int) -> Iterator[str]:
    if not plan.warnings:
        return
    head = "\n#### Warnings\n\n"
    yield head
    budget -= len(head) + 100  # 100: the "more warnings" line
    for shown, w in enumerate(plan.warnings):
        line = f"- {_clip(w, _MAX_WARNING_CHARS)}\n"
        if len(line) > budget:
            yield f"- … and {len(plan.warnings) - shown:,} more warnings (see the plan file)\n"
            return
        budget -= len(line)
        yield line


def _short(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:_SHORT_DIGEST]}" if hexpart else digest[:_SHORT_DIGEST]


def _age(created: datetime | None, now: datetime) -> str:
    if created is None:
        return "unknown"
    days = (now - created.astimezone(UTC)).days
    if days < 0:
        return "in the future"
    return "today" if days == 0 else _count(days, "day")


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural or noun + 's'}"
