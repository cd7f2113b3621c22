"""Restore: re-upload the manifests an apply deleted, from its journal, and re-point their tags;
and point the tags an apply untagged at their images again.

Works until garbage collection removes the blobs those manifests reference. May import registry
(through its port, `registry.api.RegistryPort`), journal, oci and errors; never prints.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from retention import oci
from retention.errors import ProtocolError, RegistryError, RetentionError
from retention.journal import IntentRecord, JournalState, Key, TagKey, UntagIntentRecord
from retention.registry.api import RegistryPort
from retention.text import first_line

log = logging.getLogger(__name__)

GC_HINT = (
    "restore works only until garbage collection runs: it re-uploads manifests, not the layers "
    "and configs they reference"
)

RestoreKind = Literal["restored", "failed"]


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    """One manifest: re-uploaded or not; which tags point at it again, which were left alone."""

    intent: IntentRecord
    kind: RestoreKind
    tags_restored: tuple[str, ...] = ()
    tags_skipped: tuple[tuple[str, str], ...] = ()  # (tag, why it was not re-pointed)
    reason: str | None = None
    blob_unknown: bool = False  # the registry no longer holds a blob: GC already ran

    @property
    def key(self) -> Key:
        return self.intent.key


@dataclass(frozen=True, slots=True)
class RestoreReport:
    outcomes: tuple[RestoreOutcome, ...]  # in the order they were restored

    def count(self, kind: RestoreKind) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    @property
    def complete(self) -> bool:
        return all(o.kind == "restored" and not o.tags_skipped for o in self.outcomes)

    @property
    def gc_ran(self) -> bool:
        return any(o.blob_unknown for o in self.outcomes)


def _subjects(intent: IntentRecord) -> set[str]:
    found = {s for t in intent.tags if (s := oci.cosign_subject(t)) is not None}
    try:
        manifest = oci.parse_manifest(intent.raw, intent.media_type, intent.digest)
    except ProtocolError:
        return found
    if manifest.subject is not None:
        found.add(manifest.subject.digest)
    return found


def select(
    state: JournalState, *, repository: str | None = None, tag: str | None = None
) -> tuple[IntentRecord, ...]:
    """The manifests to restore, in an order the registry accepts.

    Every manifest the journal saw an intent to delete (restoring one that was never deleted
    changes nothing); narrowed to a repository and/or to the image a tag named, together with
    its platform manifests, its artifacts and their subjects. Ordered children before their
    index and subjects before their referrers: a registry refuses an index whose platform
    manifests are missing.
    """
    intents = state.intents()
    if repository is not None:
        intents = {k: v for k, v in intents.items() if k[0] == repository}
    children: dict[Key, set[Key]] = defaultdict(set)
    subjects: dict[Key, set[Key]] = {}
    referrers: dict[Key, set[Key]] = defaultdict(set)
    for key, intent in intents.items():
        repo = key[0]
        if intent.parent is not None and (repo, intent.parent) in intents:
            children[(repo, intent.parent)].add(key)
        subjects[key] = {(repo, s) for s in _subjects(intent) if (repo, s) in intents}
        for s in subjects[key]:
            referrers[s].add(key)
    chosen = set(intents)
    if tag is not None:
        chosen = set()
        stack = [k for k, v in intents.items() if tag in v.tags]
        while stack:
            key = stack.pop()
            if key in chosen:
                continue
            chosen.add(key)
            stack.extend(children[key] | referrers[key] | subjects[key])
    # must_first[k]: what has to exist before k is uploaded
    must_first = {k: (children[k] | subjects[k]) & chosen for k in chosen}
    ordered: list[IntentRecord] = []
    done: set[Key] = set()
    pending = set(chosen)
    while pending:
        ready = sorted(k for k in pending if must_first[k] <= done)
        if not ready:  # a cycle cannot come from content-addressed manifests; be safe anyway
            ready = sorted(pending)
        for key in ready:
            ordered.append(intents[key])
            done.add(key)
            pending.discard(key)
    return tuple(ordered)


def _is_blob_unknown(exc: RegistryError) -> bool:
    return exc.code in ("MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN")


def restore(
    client: RegistryPort,
    intents: tuple[IntentRecord, ...],
    *,
    progress: Callable[[RestoreOutcome], None] | None = None,
) -> RestoreReport:
    """PUT each manifest by digest, then point each of its tags at it again.

    A tag that exists and now points elsewhere (pushed since the apply) is left alone and
    reported. A manifest whose blobs are gone fails with `blob_unknown` (garbage collection
    already ran); an index whose platform manifest could not be restored is not attempted.
    """
    outcomes: list[RestoreOutcome] = []
    failed: set[Key] = set()
    for intent in intents:
        outcome = _restore_one(client, intent, failed)
        if outcome.kind == "failed":
            failed.add(intent.key)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return RestoreReport(outcomes=tuple(outcomes))


def _restore_one(client: RegistryPort, intent: IntentRecord, failed: set[Key]) -> RestoreOutcome:
    repo, digest = intent.key
    if not oci.digest_matches(intent.raw, digest):
        return RestoreOutcome(
            intent, "failed", reason="the journal's copy does not match its digest"
        )
    missing = sorted(c.digest for c in _children(intent) if (repo, c.digest) in failed)
    if missing:
        return RestoreOutcome(
            intent, "failed", reason=f"its platform manifest {missing[0]} could not be restored"
        )
    try:
        put = client.put_manifest(repo, digest, intent.raw, intent.media_type)
    except RegistryError as exc:
        return _put_failed(intent, exc)
    if put != digest:
        return RestoreOutcome(intent, "failed", reason=f"the registry stored it as {put}")
    restored: list[str] = []
    skipped: list[tuple[str, str]] = []
    for tag in intent.tags:
        try:
            current = client.head_manifest(repo, tag)
            if current is not None and current.digest != digest:
                skipped.append((tag, f"now points at {current.digest} (pushed since); left alone"))
                continue
            if current is None:
                client.put_manifest(repo, tag, intent.raw, intent.media_type)
            restored.append(tag)
        except RegistryError as exc:
            skipped.append((tag, first_line(exc.diagnostics())))
    return RestoreOutcome(
        intent, "restored", tags_restored=tuple(restored), tags_skipped=tuple(skipped)
    )


def _children(intent: IntentRecord) -> tuple[oci.Descriptor, ...]:
    try:
        return oci.parse_manifest(intent.raw, intent.media_type, intent.digest).children
    except ProtocolError:
        return ()


def _put_failed(intent: IntentRecord, exc: RegistryError) -> RestoreOutcome:
    if _is_blob_unknown(exc):
        return RestoreOutcome(
            intent,
            "failed",
            reason="a blob it references is gone: garbage collection already ran since the "
            "apply, so this manifest cannot be restored",
            blob_unknown=True,
        )
    reason = first_line(exc.diagnostics()) if isinstance(exc, RetentionError) else str(exc)
    return RestoreOutcome(intent, "failed", reason=reason)


# -- untags --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UntagRestoreOutcome:
    """One untagged tag: pointed at its image again, or not (and why)."""

    intent: UntagIntentRecord
    kind: RestoreKind
    reason: str | None = None
    blob_unknown: bool = False

    @property
    def key(self) -> TagKey:
        return self.intent.key


def select_untags(
    state: JournalState, *, repository: str | None = None, tag: str | None = None
) -> tuple[UntagIntentRecord, ...]:
    """The untags to undo, sorted: every tag the journal has an untag intent for that named an
    image (a dangling tag named none: there is nothing to point it at), narrowed to a
    repository and/or a tag."""
    return tuple(
        intent
        for key, intent in sorted(state.untag_intents().items())
        if intent.raw is not None
        and intent.digest is not None
        and intent.media_type is not None
        and (repository is None or key[0] == repository)
        and (tag is None or key[1] == tag)
    )


def restore_untags(
    client: RegistryPort,
    intents: tuple[UntagIntentRecord, ...],
    *,
    progress: Callable[[UntagRestoreOutcome], None] | None = None,
) -> tuple[UntagRestoreOutcome, ...]:
    """Point each tag at the image it named before the untag, by PUTting the journaled bytes
    under the tag (one write; the image itself was kept). A tag pushed since is left alone; a
    tag still on this run's throw-away manifest is re-pointed and the throw-away deleted."""
    outcomes = []
    for intent in intents:
        outcome = _restore_untag(client, intent)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return tuple(outcomes)


def _restore_untag(client: RegistryPort, intent: UntagIntentRecord) -> UntagRestoreOutcome:
    repo, tag = intent.key
    assert intent.raw is not None and intent.digest is not None and intent.media_type is not None
    if not oci.digest_matches(intent.raw, intent.digest):
        return UntagRestoreOutcome(intent, "failed", "the journal's copy does not match its digest")
    try:
        current = client.head_manifest(repo, tag)
        if current is not None and current.digest == intent.digest:
            return UntagRestoreOutcome(intent, "restored", "it points at its image already")
        if current is not None and current.digest != intent.throwaway:
            return UntagRestoreOutcome(
                intent, "failed", f"now points at {current.digest} (pushed since); left alone"
            )
        client.put_manifest(repo, tag, intent.raw, intent.media_type)
        if current is not None and intent.throwaway is not None:
            client.delete_manifest(repo, intent.throwaway)  # a half-done untag's throw-away
    except RegistryError as exc:
        if _is_blob_unknown(exc):
            return UntagRestoreOutcome(
                intent,
                "failed",
                "a blob of its image is gone: garbage collection ran after the image lost its "
                "last tag",
                blob_unknown=True,
            )
        return UntagRestoreOutcome(intent, "failed", first_line(exc.diagnostics()))
    return UntagRestoreOutcome(intent, "restored")
