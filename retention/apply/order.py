"""The order of the DELETEs, and what the bytes just fetched say of the plan: an index before its
platform manifests, a subject before its artifacts; a skipped entry skips what depends on it; an
untagged entry that nothing the plan deletes holds is refused. PURE: values in, values out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from typing import Literal

from retention import oci
from retention.apply.outcomes import Skip, Verified
from retention.errors import ProtocolError
from retention.journal import IntentRecord, Key
from retention.plan import Entry


def unheld(
    entries: Mapping[Key, Entry],
    verified: Mapping[Key, Verified],
    skips: dict[Key, Skip],
    untagged_ok: Collection[Key],
    intents: Callable[[], Mapping[Key, IntentRecord]],
) -> list[tuple[Key, str]]:
    """Untagged entries the plan could not have made: evaluate deletes an untagged manifest
    only as a platform manifest of a deleted index (`parent`) or as a referrer of a deleted
    subject. The bytes just fetched by digest (immutable) say which, whatever the plan file
    claims, so a platform manifest of a kept index listed with no parent, or under an index
    that does not list it, is refused even when kept tags are trusted (invariant 2,
    docs/decisions.md). `untagged_ok` is what an untagged rule owns now (a storage plan);
    `intents` reads the journal's copies, only when needed. Adds to `skips` the platform
    manifests whose index is gone and cannot be checked."""
    out: list[tuple[Key, str]] = []
    journal_intents: Mapping[Key, IntentRecord] | None = None
    for key, v in sorted(verified.items()):
        e = entries[key]
        repo, digest = key
        if e.parent is not None:
            parent_key = (repo, e.parent)
            if parent_key in verified:
                listed = verified[parent_key].manifest.children
            elif parent_key in skips and skips[parent_key].kind != "gone":
                continue  # skipped with its index (see `dependencies`)
            else:
                # deleted by an earlier run of this plan, or gone: its bytes are in the
                # journal when this plan deleted it, else it cannot be checked
                if journal_intents is None:
                    journal_intents = intents()
                manifest = _journaled(journal_intents.get(parent_key))
                if manifest is None:
                    skips[key] = Skip(
                        "stale", f"its index {e.parent} is gone and could not be checked"
                    )
                    continue
                listed = manifest.children
            if digest not in {c.digest for c in listed}:
                out.append((key, f"its index {e.parent} does not list it"))
        elif not e.tags:
            subject = v.manifest.subject
            if key in untagged_ok and (subject is None or (repo, subject.digest) not in entries):
                # an untagged manifest of the storage (no tag, no index, no present
                # subject), selected by an untagged rule now as when the plan was made
                continue
            if subject is None:
                out.append((key, "it has no tags, no index and no subject"))
            elif (repo, subject.digest) not in entries:
                out.append((key, f"its subject {subject.digest} is not deleted by the plan"))
    return out


def _journaled(intent: IntentRecord | None) -> oci.Manifest | None:
    if intent is None:
        return None
    try:
        return oci.parse_manifest(intent.raw, intent.media_type, intent.digest)
    except ProtocolError:
        return None


def dependencies(
    entries: Mapping[Key, Entry],
    kept: Collection[Key],
    verified: dict[Key, Verified],
    skips: dict[Key, Skip],
) -> dict[Key, set[Key]]:
    """Order: an index before its platform manifests, a subject before its artifacts.

    A dependency that is skipped skips its dependents too (a platform manifest of a kept
    index, an artifact of a kept subject are never deleted). Moves skipped entries from
    `verified` to `skips`; returns, per entry left, the entries it must wait for. `kept` is
    what the plan keeps.
    """
    # A platform manifest shared by several planned indexes waits for all of them.
    indexes: dict[Key, set[Key]] = defaultdict(set)
    for key, v in verified.items():
        for child in v.manifest.children:
            indexes[(key[0], child.digest)].add(key)
    deps: dict[Key, set[Key]] = {}
    subjects_of: dict[Key, set[Key]] = defaultdict(set)
    for key, v in verified.items():
        repo = key[0]
        e = entries[key]
        needs: set[Key] = set(indexes.get(key, ()))
        if e.parent is not None:
            needs.add((repo, e.parent))
        subjects = {s for t in e.tags if (s := oci.cosign_subject(t)) is not None}
        if v.manifest.subject is not None:
            subjects.add(v.manifest.subject.digest)
        for subject in sorted(subjects):
            if (repo, subject) in kept:
                skips[key] = Skip("stale", f"its subject {subject} is kept by the plan")
            needs.add((repo, subject))
            subjects_of[key].add((repo, subject))
        deps[key] = {n for n in needs if n in entries and n != key}
    _propagate_skips(deps, subjects_of, skips)
    for key in [k for k in verified if k in skips]:
        del verified[key]
        del deps[key]
    return {key: {d for d in needs if d in verified} for key, needs in deps.items()}


def _propagate_skips(
    deps: Mapping[Key, set[Key]], subjects_of: Mapping[Key, set[Key]], skips: dict[Key, Skip]
) -> None:
    """Skip every entry one of whose dependencies is skipped, until nothing changes."""
    changed = True
    while changed:
        changed = False
        for key in sorted(deps):
            if key in skips:
                continue
            for dep in sorted(deps[key]):
                skip = skips.get(dep)
                if skip is None or skip.kind == "gone":  # gone is what we wanted
                    continue
                what = "subject" if dep in subjects_of.get(key, ()) else "index"
                kind: Literal["stale", "failed"] = "failed" if skip.kind == "failed" else "stale"
                skips[key] = Skip(kind, f"its {what} {dep[1]} was not deleted ({skip.kind})")
                changed = True
                break
