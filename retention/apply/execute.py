"""One apply of one plan: resume from the journal, re-verify (retention/apply/verify.py), refuse
an edited plan, order (retention/apply/order.py), then the DELETEs, at most `concurrency` in
flight, each journaled before and after, with dangling-tag repair and a HEAD to confirm it.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Literal

from retention.apply.control import RunControl
from retention.apply.order import dependencies, unheld
from retention.apply.outcomes import (
    KEPT_PREFIX,
    ApplyReport,
    EntryOutcome,
    NotManifest,
    OnOutcome,
    ProgressEvent,
    Skip,
    UntagOutcome,
    Verified,
    reason_of,
)
from retention.apply.untag import UntagRun
from retention.apply.verify import Verifier
from retention.errors import (
    ApplyRefused,
    AuthError,
    DeleteDisabledError,
    JournalError,
    ProtocolError,
    RegistryError,
    TransportError,
)
from retention.journal import Journal, Key, TagKey
from retention.plan import Entry, Plan
from retention.registry.api import RegistryPort

# The package's logger: log records (and JSON log lines) name `retention.apply` as before the
# package was split (docs/decisions.md, "Apply and evaluate rooms").
log = logging.getLogger("retention.apply")

_REMAKE = "make a new plan with `retention plan -p POLICY -o plan.json`"


class _Run:
    """One apply of one plan; see `apply_plan`."""

    def __init__(
        self,
        plan: Plan,
        client: RegistryPort,
        journal: Journal,
        control: RunControl,
        progress: OnOutcome | None,
        *,
        verify_kept: bool,
        policy_keeps: Mapping[Key, str],
        policy_untagged: Collection[Key],
        untag_keeps: Mapping[TagKey, str],
        nonce: str,
    ) -> None:
        self.plan = plan
        self.untag_keeps = untag_keeps
        self.nonce = nonce
        self.policy_keeps = policy_keeps
        # untagged manifests of a storage plan that an untagged rule owns in the policy evaluated
        # again on the storage: the only untagged roots apply accepts (deleted, or skipped as
        # kept when the rule keeps them now)
        self.untagged_ok = (
            frozenset(policy_untagged) if plan.inventory_source == "storage" else frozenset()
        )
        self.client = client
        self.journal = journal
        self.ctl = control
        self.progress = progress
        self.verifier = Verifier(plan, client, journal, control, verify_kept=verify_kept)
        self.entries = self.verifier.entries
        self.outcomes: dict[Key, EntryOutcome] = {}

    def _final(self, outcome: EntryOutcome) -> None:
        self.outcomes[outcome.key] = outcome
        if self.progress is not None:
            self.progress(ProgressEvent(outcome, len(self.outcomes), len(self.entries)))

    def run(self) -> ApplyReport:
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
        skips: dict[Key, Skip] = {}
        verified = self._verified(todo, skips)
        for key in sorted(verified):
            # Delete only what the policy, evaluated again now, deletes too (docs/decisions.md,
            # "Apply against the policy"). After
            # the refusals above, so a plan edited into nonsense is still refused as a whole.
            reason = self.policy_keeps.get(key)
            if reason is not None:
                del verified[key]
                skips[key] = Skip("kept", KEPT_PREFIX + reason)
        kept = {(k.repository, k.digest) for k in self.plan.kept}
        deps = dependencies(self.entries, kept, verified, skips)
        for key in sorted(skips):
            skip = skips[key]
            self.journal.outcome(skip.kind, repository=key[0], digest=key[1], reason=skip.reason)
            self._final(EntryOutcome(self.entries[key], skip.kind, skip.reason))
        self._delete_all(verified, deps)
        untags = (
            UntagRun(
                self.plan,
                self.client,
                self.journal,
                self.ctl,
                nonce=self.nonce,
                policy_keeps=self.untag_keeps,
            ).run()
            if self.plan.untags
            else ()
        )
        return self._report(untags)

    def _verified(self, todo: list[Key], skips: dict[Key, Skip]) -> dict[Key, Verified]:
        """The entries re-verification proves deletable; the rest go to `skips`. Raises
        ApplyRefused, before any DELETE, when the registry's answers show an edited plan."""
        v = self.verifier
        listed = v.list_tags(sorted({repo for repo, _ in todo}), todo, skips)
        v.check_new_tags(listed, todo, skips)
        checks = dict(self.ctl.map(v.verifier(listed), [k for k in todo if k not in skips]))
        refused = sorted((key, c.reason) for key, c in checks.items() if isinstance(c, NotManifest))
        if refused:
            raise ApplyRefused(
                f"{len(refused)} planned deletion(s) are not manifests of their repository, so "
                "the plan was edited or is corrupt; nothing was deleted:\n  " + _listed(refused),
                hint=f"{_REMAKE}; if the registry answers HTTP 500 for every manifest, repair "
                "the registry first",
            )
        verified: dict[Key, Verified] = {}
        for key, check in checks.items():
            if isinstance(check, Verified):
                verified[key] = check
            elif isinstance(check, Skip):
                skips[key] = check
        loose = unheld(self.entries, verified, skips, self.untagged_ok, self.journal.state.intents)
        if loose:
            raise ApplyRefused(
                f"{len(loose)} planned untagged manifest(s) are not held by anything the plan "
                "deletes, so the plan was edited or is corrupt; nothing was deleted:\n  "
                + _listed(loose),
                hint=f"{_REMAKE}; plan files must not be edited by hand",
            )
        return verified

    def _delete_all(self, verified: dict[Key, Verified], deps: dict[Key, set[Key]]) -> None:
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
                if len(running) >= self.ctl.concurrency or self.ctl.stopping():
                    return
                if not waiting[key]:
                    del waiting[key]
                    running[self.ctl.pool.submit(self._delete, key, verified[key])] = key

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
            error = self.ctl.abort_error
            why = reason_of(error) if error else "dependency cycle"
            self._final(EntryOutcome(self.entries[key], "failed", f"not attempted: {why}"))

    def _delete(self, key: Key, v: Verified) -> EntryOutcome:
        e = self.entries[key]
        repo, digest = key
        if self.ctl.abort_error is not None:
            return EntryOutcome(e, "failed", f"not attempted: {reason_of(self.ctl.abort_error)}")
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
            self.ctl.abort(exc)
            return EntryOutcome(e, "failed", f"not attempted: {reason_of(exc)}")
        try:
            if v.repair:
                self._repair(repo, digest, v)
            existed = self.client.delete_manifest(repo, digest)
            if existed:
                self._confirm_deleted(repo, digest)
        except RegistryError as exc:
            if not self._gone_despite(repo, digest, exc):
                if isinstance(exc, DeleteDisabledError | AuthError | TransportError):
                    # The next DELETE would get the same answer (deletion disabled, no
                    # permission, the registry down after every retry): stop instead of failing
                    # each one. A re-run resumes from the journal.
                    self.ctl.abort(exc)
                return self._failed(e, exc)
            existed = False
        kind: Literal["done", "gone"] = "done" if existed else "gone"
        reason = "dangling tag repaired" if v.repair else None
        try:
            self.journal.outcome(kind, repository=repo, digest=digest, reason=reason)
        except JournalError as exc:
            self.ctl.abort(exc)
        return EntryOutcome(e, "deleted" if existed else "gone", reason, repaired=v.repair)

    def _gone_despite(self, repo: str, digest: str, exc: RegistryError) -> bool:
        """A DELETE that crossed another DELETE of the same digest can fail inside the registry:
        distribution checks the manifest link, then removes it, and answers 500 when another
        request removed it in between (docs/decisions.md, "Concurrent DELETEs"). When the
        registry no longer serves the manifest, it is gone all the same."""
        if exc.status is None or exc.status < 500:
            return False
        try:
            return self.client.head_manifest(repo, digest) is None
        except RegistryError:
            return False

    def _confirm_deleted(self, repo: str, digest: str) -> None:
        """A 202 is only a claim: a HEAD of the digest must now answer 404 (one request per
        deletion; docs/decisions.md, "What is trusted"). A registry that still serves the
        manifest fails the entry instead of counting it deleted."""
        if self.client.head_manifest(repo, digest) is not None:
            raise ProtocolError(
                f"the registry answered 202 to the DELETE of {repo}@{digest} "
                "but still serves the manifest; not counted as deleted"
            )

    def _repair(self, repo: str, digest: str, v: Verified) -> None:
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
        reason = reason_of(exc)
        try:
            self.journal.outcome("failed", repository=e.repository, digest=e.digest, reason=reason)
        except JournalError as journal_exc:
            self.ctl.abort(journal_exc)
        return EntryOutcome(e, "failed", reason)

    def _report(self, untags: tuple[UntagOutcome, ...]) -> ApplyReport:
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
        return ApplyReport(
            outcomes=outcomes, bytes_reclaimable=freed, error=self.ctl.abort_error, untags=untags
        )


def _listed(problems: list[tuple[Key, str]]) -> str:
    return "\n  ".join(f"{repo}@{digest}: {reason}" for (repo, digest), reason in problems[:5])


def apply_plan(
    plan: Plan,
    client: RegistryPort,
    journal: Journal,
    *,
    concurrency: int = 8,
    progress: OnOutcome | None = None,
    should_stop: Callable[[], bool] | None = None,
    verify_kept: bool = False,
    policy_keeps: Mapping[Key, str] | None = None,
    policy_untagged: Collection[Key] | None = None,
    untag_keeps: Mapping[TagKey, str] | None = None,
    nonce: str | None = None,
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
    (retention/workflow.py); an entry the fresh inventory does not hold is left to the checks
    here.

    `policy_untagged` is what that evaluation's untagged rules own (`untagged_owned`). A planned
    manifest that no tag, no index and no deleted subject holds is refused as an edited plan,
    unless the plan's inventory came from the storage and `policy_untagged` holds it: an untagged
    manifest an untagged rule selects (docs/decisions.md, "Applying untagged deletions").

    After the DELETEs, the plan's untags (retention/apply/untag.py), one outcome each in
    `report.untags`; `untag_keeps` holds those the policy, evaluated again, does not plan
    (`policy_untag_keeps`): skipped as `kept`. `nonce` makes this run's throw-away manifests
    its own (random when not given).
    """
    control = RunControl(concurrency, should_stop)
    try:
        return _Run(
            plan,
            client,
            journal,
            control,
            progress,
            verify_kept=verify_kept,
            policy_keeps=policy_keeps or {},
            policy_untagged=policy_untagged or (),
            untag_keeps=untag_keeps or {},
            nonce=nonce or secrets.token_hex(8),
        ).run()
    finally:
        control.shutdown()
