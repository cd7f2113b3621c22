"""The deletion plan: frozen `Plan` and its entries; deterministic JSON, schema-checked loading,
and the text a reviewer reads.

Pure: no I/O beyond the schema file shipped in the package.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from retention.errors import PlanError
from retention.oci import INDEX_TYPES, format_time
from retention.text import json_safe, message, untrusted

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One manifest the plan deletes or keeps, and why.

    `parent` is the index digest for an index's platform manifest, else None.
    `rule` is the owning rule's name (None when no rule owns it: unselected, protected, a child).
    """

    repository: str
    digest: str
    media_type: str
    tags: tuple[str, ...]
    parent: str | None
    created: datetime | None
    size: int
    rule: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Untag:
    """A tag the plan removes alone, leaving its image (docs/decisions.md "Untag").

    `digest` is the image the tag pointed at when planned, or None for a dangling tag (listed,
    its manifest gone). `rule` is the rule that dooms the tag (None for a dangling tag that no
    rule selects).
    """

    repository: str
    tag: str
    digest: str | None
    rule: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Summary:
    repositories: int
    tags: int
    images: int
    tags_deleted: int
    images_deleted: int
    bytes_reclaimable: int
    tags_untagged: int = 0
    # False when the inventory covered part of the registry: bytes are then an upper bound
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Plan:
    """What `apply` will delete; `deletions` and `kept` are sorted by (repository, digest)."""

    generated_at: datetime
    registry: str
    policy_path: str
    policy_sha256: str
    max_deletions: str  # as the policy wrote it: "500" or "25%"
    summary: Summary
    deletions: tuple[Entry, ...]
    kept: tuple[Entry, ...]
    warnings: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION
    # the `now` the policy was evaluated at (`plan --as-of`); None: `generated_at`
    evaluated_at: datetime | None = None
    inventory_source: str = "api"  # where the inventory came from: "api" (or "storage")
    # sorted by (repository, tag); only with `settings.untag: true`
    untags: tuple[Untag, ...] = ()
    # how apply removes a tag, per repository with untags: "delete-tag" (the registry deletes
    # tags by name) or "throw-away" (push a throw-away manifest to the tag, delete it by digest)
    untag_methods: tuple[tuple[str, str], ...] = ()

    @property
    def as_of(self) -> datetime:
        """The time the policy was evaluated at: `evaluated_at`, else `generated_at`."""
        return self.generated_at if self.evaluated_at is None else self.evaluated_at


# --- JSON ---------------------------------------------------------------------------------------

_HINT = "make a new plan with `retention plan -p POLICY -o plan.json`"
_DIGEST_FIELDS = frozenset({"digest", "parent"})


def to_document(plan: Plan) -> dict[str, Any]:
    """The plan file's JSON value (what `to_json` writes, as Python objects).

    `untags`, `untag_methods` and `summary.tags_untagged` are written only when the plan has
    untags (or methods): a plan without them has the bytes it had before untag existed
    (docs/decisions.md, "Untag: policy and plan").
    """
    doc: dict[str, Any] = {
        "format_version": plan.format_version,
        "generated_at": format_time(plan.generated_at),
        "evaluated_at": format_time(plan.as_of),
        "inventory_source": plan.inventory_source,
        "registry": plan.registry,
        "policy": {"path": plan.policy_path, "sha256": plan.policy_sha256},
        "max_deletions": _max_deletions_json(plan.max_deletions),
        "summary": {
            "repositories": plan.summary.repositories,
            "tags": plan.summary.tags,
            "images": plan.summary.images,
            "tags_deleted": plan.summary.tags_deleted,
            "images_deleted": plan.summary.images_deleted,
            "bytes_reclaimable": plan.summary.bytes_reclaimable,
            "complete": plan.summary.complete,
        },
        "deletions": [_entry_json(e) for e in _sorted(plan.deletions)],
        "kept": [_entry_json(e) for e in _sorted(plan.kept)],
        "warnings": list(plan.warnings),
    }
    if plan.untags:
        doc["untags"] = [_untag_json(u) for u in _sorted_untags(plan.untags)]
        doc["summary"]["tags_untagged"] = plan.summary.tags_untagged
    if plan.untag_methods:
        doc["untag_methods"] = dict(sorted(plan.untag_methods))
    return doc


def to_json(plan: Plan) -> str:
    """The plan file (DESIGN §4): sorted keys and lists, UTC `Z` times, 2-space indent, newline.

    Deterministic: the same plan always gives the same bytes. The bytes are exactly
    `json.dumps(to_document(plan), sort_keys=True, indent=2, ensure_ascii=False) + "\n"`;
    entries are formatted here because the indenting encoder is pure Python and a 100,000-tag
    plan took seconds through it (benchmarks/bench_evaluate.py).
    """
    # entries (and untags) are formatted below
    doc = to_document(replace(plan, deletions=(), kept=(), untags=()))
    if plan.untags:  # the summary's count is written with the untags
        doc["summary"]["tags_untagged"] = plan.summary.tags_untagged

    def nested(key: str) -> str:
        text = json.dumps(doc[key], sort_keys=True, indent=2, ensure_ascii=False)
        return f"  {_str(key)}: " + text.replace("\n", "\n  ")

    parts = [
        "{",
        f'  "deletions": {_entries(plan.deletions)},',
        f'  "evaluated_at": {_str(doc["evaluated_at"])},',
        f'  "format_version": {json.dumps(doc["format_version"])},',
        f'  "generated_at": {_str(doc["generated_at"])},',
        f'  "inventory_source": {_str(doc["inventory_source"])},',
        f'  "kept": {_entries(plan.kept)},',
        f'  "max_deletions": {json.dumps(doc["max_deletions"], ensure_ascii=False)},',
        nested("policy") + ",",
        f'  "registry": {_str(plan.registry)},',
        nested("summary") + ",",
    ]
    if plan.untag_methods:
        parts.append(nested("untag_methods") + ",")
    if plan.untags:
        parts.append(f'  "untags": {_untags(plan.untags)},')
    parts += [nested("warnings"), "}"]
    # names, reasons and warnings hold registry strings: no raw C1 or bidi character in the file
    return json_safe("\n".join(parts) + "\n")


_str: Callable[[str], str] = json.encoder.encode_basestring


def _opt(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _entries(entries: Iterable[Entry]) -> str:
    texts = [_entry_text(e) for e in _sorted(entries)]
    return "[\n" + ",\n".join(texts) + "\n  ]" if texts else "[]"


def _entry_text(e: Entry) -> str:
    tags = (
        "[\n        " + ",\n        ".join(_str(t) for t in sorted(e.tags)) + "\n      ]"
        if e.tags
        else "[]"
    )
    created = _str(format_time(e.created)) if e.created is not None else "null"
    return (
        "    {\n"
        f'      "created": {created},\n'
        f'      "digest": {_str(e.digest)},\n'
        f'      "media_type": {_str(e.media_type)},\n'
        f'      "parent": {_opt(e.parent)},\n'
        f'      "reason": {_str(e.reason)},\n'
        f'      "repository": {_str(e.repository)},\n'
        f'      "rule": {_opt(e.rule)},\n'
        f'      "size": {int(e.size)},\n'
        f'      "tags": {tags}\n'
        "    }"
    )


def _untags(untags: Iterable[Untag]) -> str:
    texts = [
        "    {\n"
        f'      "digest": {_opt(u.digest)},\n'
        f'      "reason": {_str(u.reason)},\n'
        f'      "repository": {_str(u.repository)},\n'
        f'      "rule": {_opt(u.rule)},\n'
        f'      "tag": {_str(u.tag)}\n'
        "    }"
        for u in _sorted_untags(untags)
    ]
    return "[\n" + ",\n".join(texts) + "\n  ]"


def from_json(text: str | bytes, source_name: str) -> Plan:
    """Parse and schema-check a plan file; raises PlanError naming every bad field.

    Messages read `plan.json: $.deletions[3].digest: ...`, with a hint to make a new plan.
    """
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanError(f"{source_name}: not valid JSON: {exc}", hint=_HINT) from exc
    if not isinstance(doc, dict):
        raise PlanError(
            f"{source_name}: $: a plan is a JSON object, not {_json_type(doc)}", hint=_HINT
        )
    version = doc.get("format_version")
    if "format_version" in doc and version != FORMAT_VERSION:
        raise PlanError(
            f"{source_name}: $.format_version: plan format version {version!r} is not supported "
            f"(this retention reads version {FORMAT_VERSION})",
            hint=_HINT,
        )
    problems = sorted(
        {(_json_path(path), message) for path, message in _schema_problems(doc)},
        key=lambda p: (p[0], p[1]),
    )
    if problems:
        raise PlanError(
            "\n".join(f"{source_name}: {path}: {message}" for path, message in problems),
            hint=_HINT,
        )
    try:
        plan = _plan_from(doc)
    except ValueError as exc:
        raise PlanError(f"{source_name}: {exc}", hint=_HINT) from exc
    seen: set[tuple[str, str]] = set()
    for field, entries in (("deletions", plan.deletions), ("kept", plan.kept)):
        for e in entries:
            if (e.repository, e.digest) in seen:
                raise PlanError(
                    f"{source_name}: $.{field}: {e.repository}@{e.digest} is listed twice",
                    hint=_HINT,
                )
            seen.add((e.repository, e.digest))
    problem = _untag_problem(plan)
    if problem is not None:
        raise PlanError(f"{source_name}: $.untags: {problem}", hint=_HINT)
    return plan


def _untag_problem(plan: Plan) -> str | None:
    """What makes the plan's untags contradict the rest of it, or None.

    Each tag the plan names is in one place: a deletion's tags, a kept image's tags, or an
    untag; and an untag never names an image the plan deletes (deleting it removes the tag).
    """
    deleted_tags = {(e.repository, t) for e in plan.deletions for t in e.tags}
    kept_tags = {(e.repository, t) for e in plan.kept for t in e.tags}
    deleted = {(e.repository, e.digest) for e in plan.deletions}
    seen: set[tuple[str, str]] = set()
    for u in plan.untags:
        key = (u.repository, u.tag)
        ref = f"{u.repository}:{u.tag}"
        if key in seen:
            return f"tag {ref} is listed twice"
        seen.add(key)
        if key in deleted_tags:
            return f"tag {ref} is listed both as untagged and as deleted"
        if key in kept_tags:
            return f"tag {ref} is listed both as untagged and as kept"
        if u.digest is not None and (u.repository, u.digest) in deleted:
            return f"tag {ref} is untagged from {u.digest}, which the plan deletes"
    return None


@functools.cache
def _validator() -> Draft202012Validator:
    resource = importlib.resources.files("retention") / "schemas" / "plan.schema.json"
    schema = json.loads(resource.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _schema_problems(doc: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for error in _validator().iter_errors(doc):
        path = tuple(error.absolute_path)
        if error.context:  # oneOf: say what the closest branch wanted
            error = best_match(error.context)
        yield path, _message(error, path)


def _message(error: ValidationError, path: tuple[str | int, ...]) -> str:
    last = path[-1] if path else None
    instance = error.instance
    if error.validator == "pattern" and last in _DIGEST_FIELDS:
        return f"{instance!r} is not a manifest digest (sha256:<64 hex> or sha512:<128 hex>)"
    if error.validator == "enum" and last == "media_type":
        return (
            f"{instance!r} is not a manifest media type: a plan deletes only image manifests "
            "and indexes, never a layer or config blob"
        )
    if error.validator == "pattern" and last == "tag":
        return f"{instance!r} is not a tag name ([A-Za-z0-9_][A-Za-z0-9._-], at most 128)"
    if error.validator == "pattern" and last in ("generated_at", "evaluated_at", "created"):
        return f"{instance!r} is not a UTC time like 2024-05-01T03:30:00Z"
    return error.message


def _json_path(path: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _plan_from(doc: dict[str, Any]) -> Plan:
    s = doc["summary"]
    # A plan written before `evaluated_at` and `inventory_source` existed was evaluated at
    # `generated_at` from the API's inventory (docs/decisions.md, "Honest plan times").
    evaluated = doc.get("evaluated_at")
    return Plan(
        generated_at=_time(doc["generated_at"], "$.generated_at"),
        evaluated_at=None if evaluated is None else _time(evaluated, "$.evaluated_at"),
        inventory_source=doc.get("inventory_source", "api"),
        registry=doc["registry"],
        policy_path=doc["policy"]["path"],
        policy_sha256=doc["policy"]["sha256"],
        max_deletions=str(doc["max_deletions"]),
        summary=Summary(
            repositories=s["repositories"],
            tags=s["tags"],
            images=s["images"],
            tags_deleted=s["tags_deleted"],
            images_deleted=s["images_deleted"],
            bytes_reclaimable=s["bytes_reclaimable"],
            tags_untagged=s.get("tags_untagged", 0),
            complete=s["complete"],
        ),
        deletions=_sorted(
            _entry_from(e, f"$.deletions[{i}]") for i, e in enumerate(doc["deletions"])
        ),
        kept=_sorted(_entry_from(e, f"$.kept[{i}]") for i, e in enumerate(doc["kept"])),
        warnings=tuple(doc["warnings"]),
        format_version=doc["format_version"],
        # a plan written before untag existed has neither key: no untags
        untags=_sorted_untags(
            Untag(u["repository"], u["tag"], u["digest"], u["rule"], u["reason"])
            for u in doc.get("untags", [])
        ),
        untag_methods=tuple(sorted(doc.get("untag_methods", {}).items())),
    )


def _entry_from(d: dict[str, Any], where: str) -> Entry:
    return Entry(
        repository=d["repository"],
        digest=d["digest"],
        media_type=d["media_type"],
        tags=tuple(sorted(d["tags"])),
        parent=d["parent"],
        created=_time(d["created"], f"{where}.created") if d["created"] is not None else None,
        size=d["size"],
        rule=d["rule"],
        reason=d["reason"],
    )


def _time(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{where}: {text!r} is not a valid time: {exc}") from exc


def _entry_json(e: Entry) -> dict[str, Any]:
    return {
        "repository": e.repository,
        "digest": e.digest,
        "media_type": e.media_type,
        "tags": sorted(e.tags),
        "parent": e.parent,
        "created": format_time(e.created) if e.created is not None else None,
        "size": e.size,
        "rule": e.rule,
        "reason": e.reason,
    }


def _untag_json(u: Untag) -> dict[str, Any]:
    return {
        "repository": u.repository,
        "tag": u.tag,
        "digest": u.digest,
        "rule": u.rule,
        "reason": u.reason,
    }


def _sorted_untags(untags: Iterable[Untag]) -> tuple[Untag, ...]:
    return tuple(sorted(untags, key=lambda u: (u.repository, u.tag)))


def _max_deletions_json(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _sorted(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (e.repository, e.digest)))


# --- text ---------------------------------------------------------------------------------------


def render_text(plan: Plan, *, show_kept: bool = False, now: datetime) -> str:
    """The plan as a reviewer reads it in a merge request; no colour.

    Per repository, each image to delete with its tags, created date, age, size and reason;
    platform manifests indented under their index; then each tag to untag (`~`), its image
    left in place; kept images only with `show_kept`. The last line is the summary, or
    `No changes.`. Registry strings are escaped here, at the edge (retention/text.py): a name or
    reason can never clear the screen or start a line.
    """
    taken = (
        ""
        if plan.as_of == plan.generated_at
        else f", inventory taken {format_time(plan.generated_at)}"
    )
    lines = [
        f"Plan for {untrusted(plan.registry)} as of {format_time(plan.as_of)}{taken} "
        f"(policy {message(plan.policy_path)})",
    ]
    by_repo: dict[str, tuple[list[Entry], list[Entry], list[Untag]]] = {}
    for e in plan.deletions:
        by_repo.setdefault(e.repository, ([], [], []))[0].append(e)
    if show_kept:
        for e in plan.kept:
            by_repo.setdefault(e.repository, ([], [], []))[1].append(e)
    for u in plan.untags:
        by_repo.setdefault(u.repository, ([], [], []))[2].append(u)
    methods = dict(plan.untag_methods)
    for repo in sorted(by_repo):
        deleted, kept, untags = by_repo[repo]
        lines.append("")
        tags = sum(len(e.tags) for e in deleted)
        counts = f"{_count(len(deleted), 'image')} ({_count(tags, 'tag')})"
        head = f"{untrusted(repo)}: {counts} to delete"
        if untags:
            how = _METHOD_WORDS.get(methods.get(repo, ""), "")
            head += f", {_count(len(untags), 'tag')} to untag{how}"
        if show_kept:
            head += f", {len(kept)} kept"
        lines.append(head)
        lines.extend(_tree(deleted, "-", now))
        lines.extend(_untag_lines(untags))
        lines.extend(_tree(kept, "=", now))
    if plan.warnings:
        lines.append("")
        lines.append("Warnings:")
        lines.extend(f"  ! {message(w)}" for w in plan.warnings)
    lines.append("")
    lines.append(closing_line(plan))
    return "\n".join(lines) + "\n"


# how `untag_methods` reads in a repository's heading
_METHOD_WORDS = {
    "delete-tag": " (the registry deletes tags)",
    "throw-away": " (by a throw-away manifest)",
}


def closing_line(plan: Plan) -> str:
    """The text plan's last line: what it deletes and untags, or `No changes.`."""
    s = plan.summary
    untag = ""
    if plan.untags:
        repos = len({u.repository for u in plan.untags})
        untag = (
            f"{_count(len(plan.untags), 'tag')} to untag in "
            f"{_count(repos, 'repository', 'repositories')}, their images kept"
        )
    if not plan.deletions:
        return f"Plan: {untag}; nothing to delete." if untag else "No changes."
    repos = len({e.repository for e in plan.deletions})
    bound = "" if s.complete else " (an upper bound: the inventory covers part of the registry)"
    return (
        f"Plan: {_count(s.images_deleted, 'image')} ({_count(s.tags_deleted, 'tag')}) "
        f"to delete in {_count(repos, 'repository', 'repositories')}, "
        f"~{human_bytes(s.bytes_reclaimable)} reclaimable after garbage collection{bound}"
        + (f"; {untag}." if untag else ".")
    )


def _untag_lines(untags: list[Untag]) -> Iterator[str]:
    """`~ tag  sha256:...` (or `(dangling)`), then the reason, in tag order."""
    for u in sorted(untags, key=lambda u: u.tag):
        image = untrusted(u.digest) if u.digest is not None else "(dangling: no image)"
        yield f"  ~ {untrusted(u.tag)}  {image}"
        rule = u.rule and f"rule `{u.rule}`"
        reason = u.reason if not rule or rule in u.reason else f"{rule}: {u.reason}"
        yield f"      untag: {message(reason)}"


def _tree(entries: list[Entry], mark: str, now: datetime) -> Iterator[str]:
    """Entries in digest order, each platform manifest under its index when both are listed."""
    digests = {e.digest for e in entries}
    children: dict[str, list[Entry]] = {}
    for e in entries:
        if e.parent is not None and e.parent in digests:
            children.setdefault(e.parent, []).append(e)

    def walk(e: Entry, depth: int, seen: frozenset[str]) -> Iterator[str]:
        pad = "  " * (depth + 1)
        label = ", ".join(untrusted(t) for t in e.tags) if e.tags else "(untagged)"
        yield f"{pad}{mark} {label}  {untrusted(e.digest)}"
        yield f"{pad}    {_when(e.created, now)}, {human_bytes(e.size)}, {_kind(e.media_type)}"
        rule = e.rule and f"rule `{e.rule}`"
        reason = e.reason if not rule or rule in e.reason else f"{rule}: {e.reason}"
        yield f"{pad}    {'kept: ' if mark == '=' else ''}{message(reason)}"
        for child in children.get(e.digest, []):
            if child.digest not in seen:
                yield from walk(child, depth + 1, seen | {child.digest})

    # tagged images by their first tag name (how a reviewer looks for them), then untagged ones
    tops = [e for e in entries if e.parent is None or e.parent not in digests]
    tops.sort(key=lambda e: (not e.tags, e.tags[0] if e.tags else "", e.digest))
    for e in tops:
        yield from walk(e, 0, frozenset({e.digest}))


def _kind(media_type: str) -> str:
    return "index" if media_type in INDEX_TYPES else "image"


def _when(created: datetime | None, now: datetime) -> str:
    if created is None:
        return "created: unknown"
    created = created.astimezone(UTC)
    age = now - created
    if age < timedelta(0):
        return f"created {created:%Y-%m-%d} (in the future)"
    days = age.days
    ago = "today" if days == 0 else f"{_count(days, 'day')} ago"
    return f"created {created:%Y-%m-%d} ({ago})"


def human_bytes(n: int) -> str:
    """`512 B`, `1.5 KiB`, `3.1 GiB` (binary units, one decimal)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
