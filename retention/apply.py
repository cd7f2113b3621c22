"""Executes a `Plan`: refusals before the first DELETE, re-verification against the registry,
ordered concurrent DELETEs, the journal, resume and dangling-tag repair.

May import registry, plan, oci, policy.model, journal and errors. Never prints: progress goes to
an injected callback; the CLI renders it. Request budget and the reasons behind each step:
docs/decisions.md (Apply).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from retention import oci
from retention.errors import (
    ApplyRefused,
    AuthError,
    DeleteDisabledError,
    JournalError,
    PlanError,
    ProtocolError,
    RegistryError,
    RetentionError,
    TransportError,
)
from retention.journal import IntentRecord, Journal, Key, redact_url
from retention.plan import FORMAT_VERSION, Entry, Plan
from retention.policy.model import MaxDeletions, Policy
from retention.registry.api import FetchedManifest, ManifestRef, RegistryPort

log = logging.getLogger(__name__)

DEFAULT_MAX_PLAN_AGE = timedelta(hours=24)

# Statuses that say "try again later", not "this is not a manifest" (after the client's retries).
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


# -- the client port --------------------------------------------------------------------------


# The one registry port (retention/registry/api.py), under the names apply uses.
ApplyClient = RegistryPort
ManifestRefLike = ManifestRef
FetchedLike = FetchedManifest


# -- values ------------------------------------------------------------------------------------

OutcomeKind = Literal["deleted", "gone", "stale", "kept", "failed", "resumed"]

KEPT_PREFIX = "the policy keeps it now: "


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    """What happened to one planned deletion.

    deleted: this run deleted it. gone: it was already gone (404). stale: skipped because the
    registry changed since the plan (a tag moved, a new tag points at it, its index was kept).
    kept: skipped because the policy, evaluated again before the first DELETE, keeps it (an entry
    added to the plan by hand, a plan from another policy, a registry that changed).
    failed: not deleted because of an error; a re-run retries it. resumed: an earlier run of this
    plan deleted it, says the journal.
    """

    entry: Entry
    kind: OutcomeKind
    reason: str | None = None
    repaired: bool = False  # a dangling tag was repaired (manifest re-PUT, then deleted)

    @property
    def key(self) -> Key:
        return (self.entry.repository, self.entry.digest)


@dataclass(frozen=True, slots=True)
class Limit:
    """The deletion limit apply enforces: the stricter of the plan's and the policy's."""

    images: int  # images (entries without a parent) the plan deletes
    allowed: int
    source: str  # human text, e.g. "policy max_deletions 25% of 40 images in scope"


@dataclass(frozen=True, slots=True)
class Preflight:
    """The result of the checks that need no registry: what apply is about to do."""

    images: int
    manifests: int
    repositories: int
    bytes_reclaimable: int
    limit: Limit
    plan_age: timedelta
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One entry reached its final state; `done` of `total` entries are final now."""

    outcome: EntryOutcome
    done: int
    total: int


Progress = Callable[[ProgressEvent], None]


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcomes: tuple[EntryOutcome, ...]  # one per planned deletion, sorted by (repository, digest)
    bytes_reclaimable: int  # what the plan said the entries now gone free (an upper bound)
    error: RetentionError | None = None  # set when apply stopped early (deletion disabled, ...)

    def count(self, kind: OutcomeKind) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def of_kind(self, kind: OutcomeKind) -> tuple[EntryOutcome, ...]:
        return tuple(o for o in self.outcomes if o.kind == kind)

    @property
    def complete(self) -> bool:
        """Every planned deletion is gone from the registry, and nothing stopped the run."""
        return self.error is None and all(
            o.kind in ("deleted", "gone", "resumed") for o in self.outcomes
        )


# -- refusals before the first request ----------------------------------------------------------


def parse_max_deletions(text: str) -> MaxDeletions:
    """The plan's `max_deletions` as the policy wrote it: "500" or "25%"."""
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100:
                raise ValueError(value)
            return MaxDeletions(percent=percent)
        count = int(value)
        if count < 0:
            raise ValueError(value)
        return MaxDeletions(count=count)
    except ValueError as exc:
        raise PlanError(
            f"plan max_deletions {text!r} is neither a count nor a percentage",
            hint="make a new plan; do not edit plan files by hand",
        ) from exc


def _limit_text(where: str, limit: MaxDeletions, in_scope: int) -> str:
    if limit.percent is not None:
        return f"{where} max_deletions {limit} of {in_scope} images in scope"
    return f"{where} max_deletions {limit}"


def deletion_limit(plan: Plan, policy_limit: MaxDeletions | None) -> Limit:
    """The stricter of the plan's and the policy's `max_deletions` for this plan.

    Counts images as the plan's summary does: every manifest, platform manifests included. A
    percentage is of the images in scope: the summary's count, or the entries the plan lists
    when those are fewer (a summary edited upwards cannot loosen the limit).
    """
    images = len(plan.deletions)
    in_scope = min(plan.summary.images, len(plan.deletions) + len(plan.kept))
    candidates = [("plan", parse_max_deletions(plan.max_deletions))]
    if policy_limit is not None:
        candidates.append(("policy", policy_limit))
    allowed, source = min(
        (
            (limit.limit(in_scope), _limit_text(where, limit, in_scope))
            for where, limit in candidates
        ),
        key=lambda pair: pair[0],
    )
    return Limit(images=images, allowed=allowed, source=source)


def _bad_plan(message: str) -> PlanError:
    return PlanError(
        f"the plan is inconsistent: {message}",
        hint="make a new plan with `retention plan -p POLICY -o plan.json`; "
        "plan files must not be edited by hand",
    )


def check_consistency(plan: Plan) -> None:
    """Structural checks a schema cannot express; each failure means a corrupt or edited plan."""
    if plan.format_version != FORMAT_VERSION:
        raise ApplyRefused(
            f"plan format version {plan.format_version} is not supported "
            f"(this retention applies version {FORMAT_VERSION})",
            hint="make the plan again with this retention release",
        )
    deletions: dict[Key, Entry] = {}
    deleted_tags: dict[tuple[str, str], str] = {}
    for e in plan.deletions:
        where = f"{e.repository}@{e.digest}"
        if not oci.is_repository(e.repository):
            raise _bad_plan(f"{e.repository!r} is not a repository name")
        if not oci.is_digest(e.digest):
            raise _bad_plan(f"deletion {e.repository}@{e.digest!r} has a malformed digest")
        if e.media_type not in oci.MANIFEST_TYPES:
            raise _bad_plan(
                f"deletion {where} has media type {e.media_type!r}, not an image manifest or "
                "index (a layer or config digest must never be deleted as a manifest)"
            )
        if e.size < 0:
            raise _bad_plan(f"deletion {where} has a negative size")
        if (e.repository, e.digest) in deletions:
            raise _bad_plan(f"{where} is listed twice in deletions")
        deletions[(e.repository, e.digest)] = e
        for tag in e.tags:
            if not oci.is_tag(tag):
                raise _bad_plan(f"deletion {where} lists {tag!r}, which is not a tag name")
            other = deleted_tags.setdefault((e.repository, tag), e.digest)
            if other != e.digest:
                raise _bad_plan(f"tag {e.repository}:{tag} is listed under two digests")
    if plan.summary.images_deleted != len(plan.deletions):
        raise _bad_plan(
            f"its summary says {plan.summary.images_deleted} images are deleted, but it lists "
            f"{len(plan.deletions)}"
        )
    kept_keys = {(k.repository, k.digest) for k in plan.kept}
    kept_tags = {(k.repository, t) for k in plan.kept for t in k.tags}
    for key, e in deletions.items():
        where = f"{e.repository}@{e.digest}"
        if key in kept_keys:
            raise _bad_plan(f"{where} is listed both as a deletion and as kept")
        for tag in e.tags:
            if (e.repository, tag) in kept_tags:
                raise _bad_plan(f"tag {e.repository}:{tag} is listed both as deleted and as kept")
            subject = oci.cosign_subject(tag)
            if subject is not None and (e.repository, subject) in kept_keys:
                raise _bad_plan(
                    f"{where} is an artifact ({tag}) of {subject}, which the plan keeps "
                    "(an artifact follows its subject)"
                )
        if e.parent is not None:
            parent = deletions.get((e.repository, e.parent))
            if parent is None:
                raise _bad_plan(
                    f"platform manifest {where} names index {e.parent}, which the plan does not "
                    "delete (a platform manifest of a kept index must never be deleted)"
                )
            if parent.media_type not in oci.INDEX_TYPES:
                raise _bad_plan(f"{where} names parent {e.parent}, which is not an index")
    for k in plan.kept:
        for tag in k.tags:
            subject = oci.cosign_subject(tag)
            if subject is not None and (k.repository, subject) in deletions:
                raise _bad_plan(
                    f"{k.repository}@{subject} is deleted while its artifact {tag} is kept "
                    "(never the subject of a kept artifact)"
                )


def check_plan(
    plan: Plan,
    *,
    registry_url: str,
    now: datetime,
    max_plan_age: timedelta | None = DEFAULT_MAX_PLAN_AGE,
    policy: Policy | None = None,
) -> Preflight:
    """Every refusal that needs no registry: format, consistency, registry, age, limits.

    Raises ApplyRefused or PlanError; nothing is contacted. `registry_url` is the registry the
    credentials are for (the policy's); `policy`, when given, adds its `max_deletions` and its
    `protect` patterns (a tag the current policy protects is never deleted).
    """
    check_consistency(plan)
    warnings: list[str] = []
    if redact_url(plan.registry) != redact_url(registry_url):
        raise ApplyRefused(
            f"the plan was made for registry {redact_url(plan.registry)}, but the policy names "
            f"{redact_url(registry_url)}",
            hint="apply a plan with the policy it was made from (-p POLICY), or make a new plan",
        )
    age = now - plan.generated_at
    if max_plan_age is not None and age > max_plan_age:
        raise ApplyRefused(
            f"the plan was made {_duration(age)} ago, longer than the maximum plan age "
            f"{_duration(max_plan_age)}: the registry has likely changed since",
            hint="make a new plan, or pass --max-plan-age to accept an older one",
        )
    if age < -timedelta(minutes=5):
        warnings.append(f"the plan is dated {_duration(-age)} in the future: check the clocks")
    if policy is not None:
        protected = sorted(
            f"{e.repository}:{t}" for e in plan.deletions for t in e.tags if policy.is_protected(t)
        )
        if protected:
            raise ApplyRefused(
                f"the plan deletes {len(protected)} tag(s) the policy now protects: "
                + ", ".join(protected[:5])
                + (" ..." if len(protected) > 5 else ""),
                hint="the policy changed since the plan was made: make a new plan",
            )
    limit = deletion_limit(plan, policy.settings.max_deletions if policy is not None else None)
    if limit.images > limit.allowed:
        raise ApplyRefused(
            f"the plan deletes {limit.images} images, more than the {limit.allowed} allowed by "
            f"{limit.source}; nothing was deleted",
            hint="review the plan; if it is right, raise settings.max_deletions in the policy "
            "and make a new plan",
        )
    return Preflight(
        images=limit.images,
        manifests=len(plan.deletions),
        repositories=len({e.repository for e in plan.deletions}),
        bytes_reclaimable=plan.summary.bytes_reclaimable,
        limit=limit,
        plan_age=age,
        warnings=tuple(warnings),
    )


def policy_keeps(plan: Plan, fresh: Plan) -> dict[Key, str]:
    """The planned deletions that `fresh` (the plan's policy evaluated again, now, on a fresh
    inventory of the repositories the plan touches) keeps, each with the reason it gives.

    A planned deletion `fresh` does not list at all is not here: it is gone from the registry,
    or unreachable from any tag, and the checks of `apply_plan` decide (gone, stale, refused).
    """
    planned = {(e.repository, e.digest) for e in plan.deletions}
    keeps: dict[Key, str] = {}
    for e in fresh.kept:
        key = (e.repository, e.digest)
        if key in planned:
            rule = e.rule and f"rule `{e.rule}`"
            keeps[key] = e.reason if not rule or rule in e.reason else f"{rule}: {e.reason}"
    return keeps


def untagged_owned(fresh: Plan) -> frozenset[Key]:
    """The untagged manifests a rule owns in `fresh` (deleted or kept by it): entries with no
    tags and no index that name a rule. Only an untagged rule owns such an entry."""
    return frozenset(
        (e.repository, e.digest)
        for e in (*fresh.deletions, *fresh.kept)
        if not e.tags and e.parent is None and e.rule is not None
    )


def _duration(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    text = "".join(parts)
    return text or f"{seconds}s"


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verified:
    """An entry proven to be a manifest of its repository, ready to be deleted."""

    raw: bytes = field(repr=False)
    media_type: str
    manifest: oci.Manifest
    tags: tuple[str, ...]  # planned tags that still point at the digest
    repair: bool = False  # dangling tag: re-PUT `raw` before the DELETE


@dataclass(frozen=True, slots=True)
class _Skip:
    kind: Literal["gone", "stale", "kept", "failed"]
    reason: str


@dataclass(frozen=True, slots=True)
class _NotManifest:
    reason: str


_Check = _Verified | _Skip | _NotManifest
_T = TypeVar("_T")
_R = TypeVar("_R")


def _first_line(exc: RetentionError) -> str:
    return exc.diagnostics().splitlines()[0]


def _transient(exc: RegistryError) -> bool:
    """An answer that says nothing about the digest: a connection failure, retries exhausted, an
    auth problem. Any other error status (2.8 answers 500 UNKNOWN for a layer or config digest
    asked for as a manifest) means the registry does not hold it as a manifest."""
    if isinstance(exc, AuthError):
        return True
    if exc.status is None:
        return isinstance(exc, TransportError)
    return exc.status in _TRANSIENT_STATUSES


class _Run:
    """One apply of one plan; see `apply_plan`."""

    def __init__(
        self,
        plan: Plan,
        client: ApplyClient,
        journal: Journal,
        concurrency: int,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None = None,
        verify_kept: bool = False,
        policy_keeps: Mapping[Key, str] | None = None,
        policy_untagged: Collection[Key] | None = None,
    ) -> None:
        self.plan = plan
        self.policy_keeps = policy_keeps or {}
        # untagged manifests of a storage plan that an untagged rule owns in the policy evaluated
        # again on the storage: the only untagged roots apply accepts (deleted, or skipped as
        # kept when the rule keeps them now)
        self.untagged_ok = (
            frozenset(policy_untagged or ()) if plan.inventory_source == "storage" else frozenset()
        )
        self.should_stop = should_stop
        self.verify_kept = verify_kept
        self.client = client
        self.journal = journal
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.entries: dict[Key, Entry] = {(e.repository, e.digest): e for e in plan.deletions}
        self.outcomes: dict[Key, EntryOutcome] = {}
        self.abort_error: RetentionError | None = None
        self._abort_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="apply")

    # helpers

    def _map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[tuple[_T, _R]]:
        work = list(items)
        futures = [self.pool.submit(fn, item) for item in work]
        return [(item, f.result()) for item, f in zip(work, futures, strict=True)]

    def _final(self, outcome: EntryOutcome) -> None:
        self.outcomes[outcome.key] = outcome
        if self.progress is not None:
            self.progress(ProgressEvent(outcome, len(self.outcomes), len(self.entries)))

    def _journal_skip(self, key: Key, skip: _Skip) -> None:
        self.journal.outcome(skip.kind, repository=key[0], digest=key[1], reason=skip.reason)

    def _stopping(self) -> bool:
        """True once the run must start nothing new: an error stopped it, or the caller asked."""
        if self.abort_error is None and self.should_stop is not None and self.should_stop():
            self._abort(
                RetentionError(
                    "apply was asked to stop before it finished",
                    hint="run the same plan again to resume from the journal",
                )
            )
        return self.abort_error is not None

    def _stop_on_transport(self, exc: RegistryError) -> None:
        # Retries are exhausted: the registry is down or failing. Asking it about the remaining
        # entries would only repeat the wait for each; stop, and let a re-run resume.
        if isinstance(exc, TransportError):
            self._abort(exc)

    def _abort(self, exc: RetentionError) -> None:
        with self._abort_lock:
            if self.abort_error is None:
                self.abort_error = exc

    # the run

    def run(self) -> ApplyReport:
        try:
            return self._run()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> ApplyReport:
        finished = self.journal.state.finished()
        todo: list[Key] = []
        for key in sorted(self.entries):
            record = finished.get(key)
            if record is not None:
                self._final(
                    EntryOutcome(
                        self.entries[key], "resumed", f"{record.kind} in an earlier run (journal)"
                    )
                )
            else:
                todo.append(key)
        skips: dict[Key, _Skip] = {}
        listed = self._list_tags(sorted({repo for repo, _ in todo}), todo, skips)
        self._check_new_tags(listed, todo, skips)
        checks = dict(self._map(self._verify_key(listed), [k for k in todo if k not in skips]))
        refused = sorted(
            (key, c.reason) for key, c in checks.items() if isinstance(c, _NotManifest)
        )
        if refused:
            lines = [f"{repo}@{digest}: {reason}" for (repo, digest), reason in refused[:5]]
            raise ApplyRefused(
                f"{len(refused)} planned deletion(s) are not manifests of their repository, so "
                "the plan was edited or is corrupt; nothing was deleted:\n  " + "\n  ".join(lines),
                hint="make a new plan with `retention plan -p POLICY -o plan.json`; if the "
                "registry answers HTTP 500 for every manifest, repair the registry first",
            )
        verified: dict[Key, _Verified] = {}
        for key, check in checks.items():
            if isinstance(check, _Verified):
                verified[key] = check
            elif isinstance(check, _Skip):
                skips[key] = check
        unheld = self._unheld(verified, skips)
        if unheld:
            lines = [f"{repo}@{digest}: {reason}" for (repo, digest), reason in unheld[:5]]
            raise ApplyRefused(
                f"{len(unheld)} planned untagged manifest(s) are not held by anything the plan "
                "deletes, so the plan was edited or is corrupt; nothing was deleted:\n  "
                + "\n  ".join(lines),
                hint="make a new plan with `retention plan -p POLICY -o plan.json`; plan files "
                "must not be edited by hand",
            )
        for key in sorted(verified):
            # Invariant 8: delete only what the policy, evaluated again now, deletes too. After
            # the refusals above, so a plan edited into nonsense is still refused as a whole.
            reason = self.policy_keeps.get(key)
            if reason is not None:
                del verified[key]
                skips[key] = _Skip("kept", KEPT_PREFIX + reason)
        deps = self._dependencies(verified, skips)
        for key in sorted(skips):
            self._journal_skip(key, skips[key])
            self._final(EntryOutcome(self.entries[key], skips[key].kind, skips[key].reason))
        self._delete_all(verified, deps)
        return self._report()

    def _list_tags(
        self, repos: list[str], todo: list[Key], skips: dict[Key, _Skip]
    ) -> dict[str, frozenset[str]]:
        def one(repo: str) -> frozenset[str] | RetentionError:
            if self._stopping() and self.abort_error is not None:
                return self.abort_error
            try:
                return frozenset(self.client.list_tags(repo))
            except RegistryError as exc:
                if exc.status == 404:  # NAME_UNKNOWN: the repository holds nothing any more
                    return frozenset()
                self._stop_on_transport(exc)
                return exc

        listed: dict[str, frozenset[str]] = {}
        for repo, result in self._map(one, repos):
            if isinstance(result, RetentionError):
                reason = f"could not list the tags of {repo}: {_first_line(result)}"
                for key in todo:
                    if key[0] == repo:
                        skips[key] = _Skip("failed", reason)
            else:
                listed[repo] = result
        return listed

    def _check_new_tags(
        self, listed: Mapping[str, frozenset[str]], todo: list[Key], skips: dict[Key, _Skip]
    ) -> None:
        """A tag the plan never saw that now holds on to a planned digest makes it stale.

        The plan saw every tag it lists in deletions or kept; only the others are resolved, with
        one GET each (the body also tells whether a new index or artifact references a planned
        manifest). With `verify_kept`, the plan's kept tags are resolved too, which catches a
        kept tag moved onto a planned digest since the plan (one GET per kept tag).
        """
        seen: dict[str, set[str]] = defaultdict(set)
        deleted: dict[str, set[str]] = defaultdict(set)
        for e in (*self.plan.deletions, *self.plan.kept):
            seen[e.repository].update(e.tags)
        for e in self.plan.deletions:
            deleted[e.repository].update(e.tags)
        skip = deleted if self.verify_kept else seen
        new = [(repo, tag) for repo, tags in listed.items() for tag in sorted(tags - skip[repo])]
        if not new:
            return
        log.info("resolving %d tag(s) not planned for deletion", len(new))

        def one(item: tuple[str, str]) -> tuple[dict[str, str], str | None]:
            repo, tag = item
            holds: dict[str, str] = {}
            if self._stopping() and self.abort_error is not None:
                return holds, f"not attempted: {_first_line(self.abort_error)}"
            kind = "kept tag" if tag in seen[repo] else "new tag"
            label = f"{kind} {tag}"
            subject = oci.cosign_subject(tag)
            if subject is not None:
                holds[subject] = f"{label} is an artifact of it"
            try:
                fetched = self.client.get_manifest(repo, tag)
            except ProtocolError:
                # not a manifest we can read (schema 1, ...): its digest still tells enough
                try:
                    ref = self.client.head_manifest(repo, tag)
                except RegistryError as exc:
                    self._stop_on_transport(exc)
                    return holds, f"could not resolve {kind} {repo}:{tag}: {_first_line(exc)}"
                if ref is not None:
                    holds[ref.digest] = f"{label} points at it"
                return holds, None
            except RegistryError as exc:
                self._stop_on_transport(exc)
                return holds, f"could not resolve {kind} {repo}:{tag}: {_first_line(exc)}"
            if fetched is None:  # deleted again since the listing
                return holds, None
            m = fetched.manifest
            holds.setdefault(m.digest, f"{label} points at it")
            for child in m.children:
                holds.setdefault(child.digest, f"{label} is an index that references it")
            if m.subject is not None:
                holds.setdefault(m.subject.digest, f"{label} is an artifact of it")
            return holds, None

        planned = set(todo)
        for (repo, _tag), (holds, error) in self._map(one, new):
            if error is not None:
                # Unknown means keep: this tag might point at any planned digest of the repo.
                for key in todo:
                    if key[0] == repo and key not in skips:
                        skips[key] = _Skip("failed", error)
                continue
            for digest, reason in holds.items():
                key = (repo, digest)
                if key in planned and key not in skips:
                    skips[key] = _Skip("stale", reason)

    def _verify_key(self, listed: Mapping[str, frozenset[str]]) -> Callable[[Key], _Check]:
        def verify(key: Key) -> _Check:
            if self._stopping() and self.abort_error is not None:
                return _Skip("failed", f"not attempted: {_first_line(self.abort_error)}")
            try:
                return self._verify(self.entries[key], listed.get(key[0], frozenset()))
            except RegistryError as exc:
                self._stop_on_transport(exc)
                return _Skip("failed", _first_line(exc))

        return verify

    def _verify(self, e: Entry, listed: frozenset[str]) -> _Check:
        """Prove the entry is still what the plan saw, with one request per listed tag (one for
        an entry without tags); the GET also yields the bytes the journal keeps."""
        repo, digest = e.repository, e.digest
        present = [t for t in e.tags if t in listed]
        fetched: FetchedLike | None = None
        answered: list[str] = []
        dangling: list[str] = []
        for tag in present:
            if fetched is None:
                try:
                    got = self.client.get_manifest(repo, tag)
                except ProtocolError as exc:
                    return _Skip("stale", f"tag {tag} now points at an unreadable manifest: {exc}")
                if got is None:
                    dangling.append(tag)
                    continue
                if got.manifest.digest != digest:
                    return _Skip("stale", f"tag {tag} moved to {got.manifest.digest}")
                fetched = got
            else:
                ref = self.client.head_manifest(repo, tag)
                if ref is None:
                    dangling.append(tag)
                    continue
                if ref.digest != digest:
                    return _Skip("stale", f"tag {tag} moved to {ref.digest}")
            answered.append(tag)
        if fetched is None:
            try:
                fetched = self.client.get_manifest(repo, digest)
            except RegistryError as exc:
                if _transient(exc):
                    raise
                return _NotManifest(
                    f"the registry does not serve it as a manifest ({exc.status} "
                    f"{exc.code or ''}: {exc.message})"
                )
            if fetched is None:
                if dangling:
                    return self._dangling(e, dangling)
                return self._gone_or_blob(e)
        if fetched.manifest.digest != digest:
            return _NotManifest(f"the registry answered digest {fetched.manifest.digest}")
        return _Verified(
            raw=fetched.raw,
            media_type=fetched.media_type,
            manifest=fetched.manifest,
            tags=tuple(answered),
        )

    def _gone_or_blob(self, e: Entry) -> _Check:
        """A digest the registry does not serve as a manifest (404): gone, unless the repository
        holds it as a blob. Registries differ here (docs/registries.md): 2.8 refuses
        /manifests/<blob digest> outright, 3.x and others answer 404, so the blob endpoint
        decides, and a plan entry naming a layer or config is refused whatever the registry.
        A manifest this plan deleted in an earlier run is in the journal: gone, no request."""
        if (e.repository, e.digest) not in self.journal.state.intents() and self.client.blob_exists(
            e.repository, e.digest
        ):
            return _NotManifest("the registry serves it as a blob, not as a manifest")
        return _Skip("gone", "already gone (404)")

    def _dangling(self, e: Entry, tags: list[str]) -> _Check:
        """Tags still listed whose manifest is gone: a registry killed mid-DELETE. Re-PUT the
        manifest from the journal, then DELETE it by digest again, which removes the tags too."""
        intent = self.journal.state.intents().get((e.repository, e.digest))
        names = ", ".join(tags)
        if intent is None:
            return _Skip(
                "failed",
                f"tag(s) {names} are dangling (listed, but the manifest is gone) and the journal "
                "holds no copy of the manifest to repair them; push the image to the tag again "
                "and make a new plan",
            )
        try:
            manifest = oci.parse_manifest(intent.raw, intent.media_type, intent.digest)
        except ProtocolError as exc:
            return _Skip("failed", f"the journal's copy of the manifest is unreadable: {exc}")
        if oci.sha256_digest(intent.raw) != e.digest:
            return _Skip("failed", "the journal's copy of the manifest does not match its digest")
        log.warning("%s@%s: repairing dangling tag(s) %s", e.repository, e.digest, names)
        return _Verified(
            raw=intent.raw,
            media_type=intent.media_type,
            manifest=manifest,
            tags=tuple(tags),
            repair=True,
        )

    def _unheld(
        self, verified: dict[Key, _Verified], skips: dict[Key, _Skip]
    ) -> list[tuple[Key, str]]:
        """Untagged entries the plan could not have made: evaluate deletes an untagged manifest
        only as a platform manifest of a deleted index (`parent`) or as a referrer of a deleted
        subject. The bytes just fetched by digest (immutable) say which, whatever the plan file
        claims, so a platform manifest of a kept index listed with no parent, or under an index
        that does not list it, is refused even when kept tags are trusted (invariant 2)."""
        unheld: list[tuple[Key, str]] = []
        intents: Mapping[Key, IntentRecord] | None = None
        for key, v in sorted(verified.items()):
            e = self.entries[key]
            repo, digest = key
            if e.parent is not None:
                parent_key = (repo, e.parent)
                if parent_key in verified:
                    listed = verified[parent_key].manifest.children
                elif parent_key in skips and skips[parent_key].kind != "gone":
                    continue  # skipped with its index (see _dependencies)
                else:
                    # deleted by an earlier run of this plan, or gone: its bytes are in the
                    # journal when this plan deleted it, else it cannot be checked
                    if intents is None:
                        intents = self.journal.state.intents()
                    intent = intents.get(parent_key)
                    try:
                        manifest = (
                            None
                            if intent is None
                            else oci.parse_manifest(intent.raw, intent.media_type, intent.digest)
                        )
                    except ProtocolError:
                        manifest = None
                    if manifest is None:
                        skips[key] = _Skip(
                            "stale", f"its index {e.parent} is gone and could not be checked"
                        )
                        continue
                    listed = manifest.children
                if digest not in {c.digest for c in listed}:
                    unheld.append((key, f"its index {e.parent} does not list it"))
            elif not e.tags:
                subject = v.manifest.subject
                if key in self.untagged_ok and (
                    subject is None or (repo, subject.digest) not in self.entries
                ):
                    # an untagged manifest of the storage (no tag, no index, no present
                    # subject), selected by an untagged rule now as when the plan was made
                    continue
                if subject is None:
                    unheld.append((key, "it has no tags, no index and no subject"))
                elif (repo, subject.digest) not in self.entries:
                    unheld.append((key, f"its subject {subject.digest} is not deleted by the plan"))
        return unheld

    def _dependencies(
        self, verified: dict[Key, _Verified], skips: dict[Key, _Skip]
    ) -> dict[Key, set[Key]]:
        """Order: an index before its platform manifests, a subject before its artifacts.

        A dependency that is skipped skips its dependents too (a platform manifest of a kept
        index, an artifact of a kept subject are never deleted). Moves skipped entries from
        `verified` to `skips`; returns, per entry left, the entries it must wait for.
        """
        kept = {(k.repository, k.digest) for k in self.plan.kept}
        # A platform manifest shared by several planned indexes waits for all of them.
        indexes: dict[Key, set[Key]] = defaultdict(set)
        for key, v in verified.items():
            for child in v.manifest.children:
                indexes[(key[0], child.digest)].add(key)
        deps: dict[Key, set[Key]] = {}
        subjects_of: dict[Key, set[Key]] = defaultdict(set)
        for key, v in verified.items():
            repo = key[0]
            e = self.entries[key]
            needs: set[Key] = set(indexes.get(key, ()))
            if e.parent is not None:
                needs.add((repo, e.parent))
            subjects = {s for t in e.tags if (s := oci.cosign_subject(t)) is not None}
            if v.manifest.subject is not None:
                subjects.add(v.manifest.subject.digest)
            for subject in sorted(subjects):
                if (repo, subject) in kept:
                    skips[key] = _Skip("stale", f"its subject {subject} is kept by the plan")
                needs.add((repo, subject))
                subjects_of[key].add((repo, subject))
            deps[key] = {n for n in needs if n in self.entries and n != key}
        changed = True
        while changed:  # propagate skips along dependencies until nothing changes
            changed = False
            for key in sorted(deps):
                if key in skips:
                    continue
                for dep in sorted(deps[key]):
                    skip = skips.get(dep)
                    if skip is None or skip.kind == "gone":  # gone is what we wanted
                        continue
                    what = "subject" if dep in subjects_of[key] else "index"
                    kind: Literal["stale", "failed"] = (
                        "failed" if skip.kind == "failed" else "stale"
                    )
                    skips[key] = _Skip(kind, f"its {what} {dep[1]} was not deleted ({skip.kind})")
                    changed = True
                    break
        for key in [k for k in verified if k in skips]:
            del verified[key]
            del deps[key]
        return {key: {d for d in needs if d in verified} for key, needs in deps.items()}

    # deletion

    def _delete_all(self, verified: dict[Key, _Verified], deps: dict[Key, set[Key]]) -> None:
        waiting = {key: set(deps[key]) for key in verified}
        dependents: dict[Key, list[Key]] = defaultdict(list)
        for key, needs in waiting.items():
            for dep in needs:
                dependents[dep].append(key)
        running: dict[Future[EntryOutcome], Key] = {}

        def submit_ready() -> None:
            # At most `concurrency` DELETEs in flight: when the registry refuses deletion or
            # goes away, only those few are affected, and progress reflects the registry.
            for key in sorted(waiting):
                if len(running) >= self.concurrency or self._stopping():
                    return
                if not waiting[key]:
                    del waiting[key]
                    running[self.pool.submit(self._delete, key, verified[key])] = key

        def skip_dependents(key: Key, why: str) -> None:
            for child in dependents.get(key, []):
                if child in waiting:
                    del waiting[child]
                    reason = f"not attempted: {why}"
                    self.journal.outcome(
                        "failed", repository=child[0], digest=child[1], reason=reason
                    )
                    self._final(EntryOutcome(self.entries[child], "failed", reason))
                    skip_dependents(child, why)

        submit_ready()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: running[f]):
                key = running.pop(future)
                outcome = future.result()
                self._final(outcome)
                if outcome.kind in ("deleted", "gone"):
                    for child in dependents.get(key, []):
                        if child in waiting:
                            waiting[child].discard(key)
                else:
                    skip_dependents(key, f"{key[0]}@{key[1]} was not deleted")
            submit_ready()
        for key in sorted(waiting):  # left when apply stopped, or (never expected) a cycle
            why = _first_line(self.abort_error) if self.abort_error else "dependency cycle"
            self._final(EntryOutcome(self.entries[key], "failed", f"not attempted: {why}"))

    def _delete(self, key: Key, v: _Verified) -> EntryOutcome:
        e = self.entries[key]
        repo, digest = key
        if self.abort_error is not None:
            return EntryOutcome(e, "failed", f"not attempted: {_first_line(self.abort_error)}")
        try:
            self.journal.intent(
                repository=repo,
                digest=digest,
                media_type=v.media_type,
                size=e.size,
                tags=v.tags,
                parent=e.parent,
                raw=v.raw,
            )
        except JournalError as exc:
            self._abort(exc)
            return EntryOutcome(e, "failed", f"not attempted: {_first_line(exc)}")
        try:
            if v.repair:
                self._repair(repo, digest, v)
            existed = self.client.delete_manifest(repo, digest)
            if existed:
                self._confirm_deleted(repo, digest)
        except (DeleteDisabledError, AuthError, TransportError) as exc:
            # The next DELETE would get the same answer (deletion disabled, no permission, the
            # registry down after every retry): stop instead of failing each one. A re-run
            # resumes from the journal.
            self._abort(exc)
            return self._failed(e, exc)
        except RegistryError as exc:
            return self._failed(e, exc)
        kind: Literal["done", "gone"] = "done" if existed else "gone"
        reason = "dangling tag repaired" if v.repair else None
        try:
            self.journal.outcome(kind, repository=repo, digest=digest, reason=reason)
        except JournalError as exc:
            self._abort(exc)
        return EntryOutcome(e, "deleted" if existed else "gone", reason, repaired=v.repair)

    def _confirm_deleted(self, repo: str, digest: str) -> None:
        """A 202 is only a claim: a HEAD of the digest must now answer 404 (one request per
        deletion; docs/decisions.md, "What is trusted"). A registry that still serves the
        manifest fails the entry instead of counting it deleted."""
        if self.client.head_manifest(repo, digest) is not None:
            raise ProtocolError(
                f"the registry answered 202 to the DELETE of {repo}@{digest} "
                "but still serves the manifest; not counted as deleted"
            )

    def _repair(self, repo: str, digest: str, v: _Verified) -> None:
        """Make dangling tags resolvable again, so the DELETE by digest removes them.

        A 2.8 killed inside DeleteManifest leaves either the tag's link with the manifest's
        revision link gone (PUT by digest brings the revision back), or a tag folder whose
        `current/link` is gone too (only a PUT by that tag writes it again). DELETE by digest
        untags only tags whose link names the digest, so both must resolve before it.
        """
        put = self.client.put_manifest(repo, digest, v.raw, v.media_type)
        if put != digest:
            raise ProtocolError(f"re-PUT of {digest} answered digest {put}")
        for tag in v.tags:
            ref = self.client.head_manifest(repo, tag)
            if ref is None:
                self.client.put_manifest(repo, tag, v.raw, v.media_type)
            elif ref.digest != digest:
                log.warning("%s:%s was pushed again meanwhile; left alone", repo, tag)

    def _failed(self, e: Entry, exc: RegistryError) -> EntryOutcome:
        reason = _first_line(exc)
        try:
            self.journal.outcome("failed", repository=e.repository, digest=e.digest, reason=reason)
        except JournalError as journal_exc:
            self._abort(journal_exc)
        return EntryOutcome(e, "failed", reason)

    def _report(self) -> ApplyReport:
        outcomes = tuple(self.outcomes[key] for key in sorted(self.outcomes))
        gone = {o.key for o in outcomes if o.kind in ("deleted", "gone", "resumed")}
        if len(gone) == len(self.entries):
            freed = self.plan.summary.bytes_reclaimable
        else:
            # An index's size includes its platform manifests: count those only on their own.
            freed = sum(
                o.entry.size
                for o in outcomes
                if o.key in gone
                and (o.entry.parent is None or (o.entry.repository, o.entry.parent) not in gone)
            )
            freed = min(freed, self.plan.summary.bytes_reclaimable)
        return ApplyReport(outcomes=outcomes, bytes_reclaimable=freed, error=self.abort_error)


def apply_plan(
    plan: Plan,
    client: ApplyClient,
    journal: Journal,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    verify_kept: bool = False,
    policy_keeps: Mapping[Key, str] | None = None,
    policy_untagged: Collection[Key] | None = None,
) -> ApplyReport:
    """Re-verify and delete what the plan lists; resumes from what `journal` already holds.

    Call `check_plan` first. Raises ApplyRefused, before the first DELETE, when a planned digest
    is not a manifest of its repository. Otherwise returns a report with one outcome per planned
    deletion; `report.error` is set when something stopped the run early: the registry refused
    deletion outright (405 UNSUPPORTED, 403), stayed unreachable after the client's retries, the
    journal became unwritable, or `should_stop()` answered True (checked before every request
    that starts new work; DELETEs in flight finish and are journaled). A re-run resumes.

    `verify_kept` also resolves the tags the plan keeps (one GET each, beyond the request
    budget), so a kept tag moved onto a planned digest since the plan keeps that digest.

    `policy_keeps` maps each (repository, digest) that the policy, evaluated again on a fresh
    inventory just before this call, keeps, to its reason: those entries are skipped as `kept`
    ("the policy keeps it now: <reason>") and journaled, before anything is deleted, and what
    depends on them (platform manifests, artifacts) is skipped with them. The caller makes it
    (retention/cli.py); an entry the fresh inventory does not hold is left to the checks here.

    `policy_untagged` is what that evaluation's untagged rules own (`untagged_owned`). A planned
    manifest that no tag, no index and no deleted subject holds is refused as an edited plan,
    unless the plan's inventory came from the storage and `policy_untagged` holds it: an untagged
    manifest an untagged rule selects (docs/decisions.md, "Applying untagged deletions").
    """
    return _Run(
        plan,
        client,
        journal,
        concurrency,
        progress,
        should_stop,
        verify_kept,
        policy_keeps,
        policy_untagged,
    ).run()
