"""Every text the commands show, as pure functions of values: inventories (text, CSV, JSON),
explanations, apply and run summaries, doctor's checks. Registry strings are escaped here, at the
edge (retention/text.py); nothing is printed.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from retention.apply import ApplyReport
from retention.doctor import Check
from retention.evaluate import TagVerdict, age_words, untagged_digests
from retention.markdown import render_markdown
from retention.model import Inventory, Repository
from retention.plan import Plan, closing_line, human_bytes
from retention.runlog import HistoryRecord
from retention.text import format_time, message, untrusted

# the logger `retention` as before the split: `--log-format json` lines name it
log = logging.getLogger("retention")


def escape_lines(text: str) -> str:
    """`text` with every line escaped by `message()`: our own line breaks stay, no registry
    string can clear the screen, move the cursor or reorder what follows."""
    return "\n".join(message(line) for line in text.split("\n"))


def _repo_bytes(repo: Repository) -> int:
    """Bytes the repository's manifests and blobs take, each blob once."""
    blobs: dict[str, int] = {}
    for image in repo.images:
        blobs[image.digest] = image.manifest_size
        blobs.update((b.digest, b.size) for b in image.blobs)
    return sum(blobs.values())


def inventory_text(inventory: Inventory) -> str:
    """Repositories by size, then each repository's tags (and untagged manifests)."""
    taken = format_time(inventory.taken_at)
    lines = [f"Registry {untrusted(inventory.registry)}, taken {taken}", ""]
    repos = sorted(inventory.repositories, key=lambda r: (-_repo_bytes(r), r.name))
    names = {r.name: untrusted(r.name) for r in repos}  # escaped at the edge (retention/text.py)
    width = max([len(n) for n in names.values()] + [10])
    lines.append(f"{'REPOSITORY':<{width}}  {'TAGS':>6}  {'IMAGES':>6}  {'SIZE':>10}")
    lines.extend(
        f"{names[r.name]:<{width}}  {len(r.tags):>6}  {len(r.images):>6}  "
        f"{human_bytes(_repo_bytes(r)):>10}"
        for r in repos
    )
    for r in repos:
        lines += ["", f"{names[r.name]}:"]
        tags = {t.name: untrusted(t.name) for t in r.tags}
        dangling = [untrusted(t) for t in r.dangling_tags]
        # columns as wide as this repository's longest tag: cosign tags are 75 characters
        tag_width = max([len(t) for t in [*tags.values(), *dangling]] + [3])
        lines.append(f"  {'TAG':<{tag_width}}  {'DIGEST':<19}  {'CREATED':<20}  {'SIZE':>10}")
        for t in r.tags:
            image = r.image(t.digest)
            created = format_time(image.created) if image and image.created else "unknown"
            size = human_bytes(image.size) if image else "?"
            lines.append(
                f"  {tags[t.name]:<{tag_width}}  {untrusted(t.digest[:19])}  {created:<20}  "
                f"{size:>10}".rstrip()
            )
        lines.extend(f"  {t:<{tag_width}}  (dangling: listed, its manifest gone)" for t in dangling)
        untagged = sorted(untagged_digests(r))
        if untagged:
            lines.append(
                f"  {'UNTAGGED':<{tag_width}}  {'DIGEST':<19}  {'CREATED':<20}  {'SIZE':>10}  "
                "PUSHED"
            )
        for digest in untagged:
            image = r.image(digest)
            if image is None:
                continue
            created = format_time(image.created) if image.created else "unknown"
            pushed = format_time(image.pushed_at) if image.pushed_at else "unknown"
            lines.append(
                f"  {'(untagged)':<{tag_width}}  {untrusted(digest[:19])}  {created:<20}  "
                f"{human_bytes(image.size):>10}  {pushed}"
            )
    lines.extend(f"warning: {message(w)}" for w in inventory.warnings)
    return "\n".join(lines) + "\n"


def inventory_csv(inventory: Inventory) -> str:
    """One row per tag; a storage inventory adds its untagged manifests."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # a storage inventory adds its untagged manifests, and two columns to say which they are
    storage = inventory.source == "storage"
    extra = ["untagged", "pushed_at"] if storage else []
    writer.writerow(
        ["repository", "tag", "digest", "media_type", "kind", "created", "size", *extra]
    )
    for r in inventory.repositories:
        for t in r.tags:
            image = r.image(t.digest)
            pushed = format_time(image.pushed_at) if image and image.pushed_at else ""
            writer.writerow(
                [
                    untrusted(r.name),
                    untrusted(t.name),
                    untrusted(t.digest),
                    untrusted(image.media_type) if image else "",
                    image.kind.value if image else "",
                    format_time(image.created) if image and image.created else "",
                    image.size if image else "",
                    *(["false", pushed] if storage else []),
                ]
            )
        if not storage:
            continue
        for digest in sorted(untagged_digests(r)):
            image = r.image(digest)
            if image is None:
                continue
            writer.writerow(
                [
                    r.name,
                    "",
                    digest,
                    image.media_type,
                    image.kind.value,
                    format_time(image.created) if image.created else "",
                    image.size,
                    "true",
                    format_time(image.pushed_at) if image.pushed_at else "",
                ]
            )
    return out.getvalue()


def inventory_json(inventory: Inventory) -> dict[str, Any]:
    """The saved inventory; a storage inventory marks each image `untagged` (model.py writes
    its push time)."""
    doc = inventory.to_document()
    if inventory.source != "storage":
        return doc
    for r, saved in zip(inventory.repositories, doc["repositories"], strict=True):
        untagged = untagged_digests(r)
        for image, entry in zip(r.images, saved["images"], strict=True):
            entry.setdefault("untagged", image.digest in untagged)  # pushed_at: model.py
    return doc


def explanation_text(verdicts: list[TagVerdict]) -> str:
    """`explain`: per tag (or manifest) its age, rule, rank and the decisive reason."""
    lines = []
    for v in verdicts:
        if v.age is None:
            age = "age unknown"
        elif v.age < timedelta(0):  # within a day ahead: clock skew, shown as such
            age = f"created {age_words(-v.age)} in the future"
        else:
            age = age_words(v.age)
        rule = f"rule {v.rule}" if v.rule else "no rule"
        rank = f", rank {v.rank}" if v.rank is not None else ""
        if v.untagged:
            ref = f"{untrusted(v.repository)}@{untrusted(v.digest)}"
            lines.append(f"{ref}  {age}  ({rule}{rank}, untagged)")
            pushed = format_time(v.pushed_at) if v.pushed_at is not None else "unknown"
            lines.append(f"    pushed: {pushed}")
            for former, until in v.former_tags:
                lines.append(f"    was: `{untrusted(former)}` until {format_time(until)}")
            if v.protected:
                lines.append("    protected: its digest is in protect.digests")
        else:
            # a dangling tag (listed, its manifest gone) points at no digest
            image = untrusted(v.digest[:19]) if v.digest else "(dangling: no manifest)"
            ref = f"{untrusted(v.repository)}:{untrusted(v.tag)}  {image}"
            lines.append(f"{ref}  {age}  ({rule}{rank})")
        lines.append(f"    {message(v.line())}")
    return "\n".join(lines) + "\n"


def markdown(plan: Plan, now: datetime) -> str:
    """The Markdown plan; what it leaves out for length is logged."""
    rendered = render_markdown(plan, now=now)
    if rendered.omitted:
        log.info("the Markdown plan leaves out %d of its deletions", rendered.omitted)
    return rendered.text


def plan_summary(plan: Plan) -> str:
    """Per repository what the plan deletes, and the text plan's closing line."""
    counts: dict[str, list[int]] = {}
    for e in plan.deletions:
        c = counts.setdefault(e.repository, [0, 0, 0])
        c[0] += 1
        c[1] += len(e.tags)
        c[2] += e.size
    lines = [
        f"  {untrusted(repo)}: {images} image(s) ({tags} tag(s)), {human_bytes(size)}"
        for repo, (images, tags, size) in sorted(counts.items())
    ]
    return "\n".join(["the plan deletes:", *lines, closing_line(plan), ""])


def apply_report_lines(report: ApplyReport, journal_path: Path, quiet: bool) -> list[str]:
    """What apply says on stderr once done: each entry not deleted, then the counts."""
    lines = []
    for kind in ("stale", "kept", "failed"):
        for o in report.of_kind(kind):
            # the plan file's names and the registry's answers: escaped at the edge
            tags = ",".join(untrusted(t) for t in o.entry.tags)
            ref = untrusted(short_ref(o.entry.repository, o.entry.digest))
            lines.append(f"{kind}: {ref} {tags}: {message(o.reason or '')}")
    for kind in ("stale", "kept", "failed"):
        for u in report.untags:
            if u.kind == kind:
                ref = untrusted(f"{u.untag.repository}:{u.untag.tag}")
                lines.append(f"untag {kind}: {ref}: {message(u.reason or '')}")
    if quiet and report.complete:
        return lines
    earlier = report.count("resumed")
    repaired = sum(1 for o in report.outcomes if o.repaired)
    extra = f"; {earlier} done by an earlier run" if earlier else ""
    extra += f"; {repaired} dangling tag(s) repaired" if repaired else ""
    kept = report.count("kept")
    extra += f"; {kept} skipped: the policy keeps them now" if kept else ""
    lines.append(
        f"deleted {report.count('deleted')}, stale {report.count('stale')}, already gone "
        f"{report.count('gone')}, failed {report.count('failed')}{extra}\n"
        f"frees up to {human_bytes(report.bytes_reclaimable)} (the plan's figure) once garbage "
        f"collection runs\n{_untag_counts(report)}journal: {journal_path}"
    )
    if not report.complete:
        lines.append(
            "only part of the plan was applied: run the same command again to finish it "
            "(stale entries, and entries the policy keeps, need a new plan)"
        )
    return lines


def _untag_counts(report: ApplyReport) -> str:
    if not report.untags:
        return ""
    earlier = report.untag_count("resumed")
    kept = report.untag_count("kept")
    extra = f"; {earlier} done by an earlier run" if earlier else ""
    extra += f"; {kept} skipped: the policy keeps them now" if kept else ""
    return (
        f"untagged {report.untag_count('untagged')}, stale {report.untag_count('stale')}, "
        f"already gone {report.untag_count('gone')}, failed {report.untag_count('failed')}"
        f"{extra}\n"
    )


def run_summary(record: HistoryRecord) -> str:
    """The line (and error) `schedule` prints after each run."""
    o = record.outcome
    text = f"run {record.status} ({record.duration_seconds:.1f} s)"
    if o is not None:
        text += (
            f": planned {o.images_planned} of {o.images} image(s), deleted {o.deleted} "
            f"({human_bytes(o.bytes_deleted)}), {o.stale} stale, {o.gone} already gone, "
            f"{o.failed} failed"
        )
        if o.gc_command is not None:
            freed = "" if o.gc_bytes_freed is None else f", freed {human_bytes(o.gc_bytes_freed)}"
            text += f"; gc exit {o.gc_exit_code}{freed}"
    if record.missed_ticks:
        text += f"; skipped {len(record.missed_ticks)} tick(s) it overran"
    if record.error and record.status != "skipped":  # a skipped --once run raises LockHeld
        text += f"\nerror: {escape_lines(record.error)}"
    return text


def short_ref(repository: str, digest: str) -> str:
    """`repo@sha256:0123456789ab`, the digest cut to 12 hex digits."""
    return f"{repository}@{digest[:19]}"


def doctor_text(checks: Sequence[Check]) -> str:
    """One line per check, and its hint when it is not ok."""
    lines = []
    for check in checks:
        # a check's message quotes the server (a header, an error body): escaped at the edge
        lines.append(f"{check.status:<4}  {check.name}: {message(check.message)}")
        if check.hint and check.status != "ok":
            lines.append(f"      hint: {message(check.hint)}")
    return "\n".join(lines) + "\n"
