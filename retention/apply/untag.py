"""Untag: remove a tag alone, leaving its image, as a plan's `untags` say (docs/decisions.md,
"Untag: registry side").

Two methods, chosen per repository at plan time: "delete-tag" (DELETE /manifests/<tag>, where the
registry deletes tags) and "throw-away" (push a tiny manifest of retention's to the tag, then
DELETE it by digest: distribution deletes every tag whose link names a deleted digest). Each untag
is re-resolved right before, journaled before and after, and verified afterwards. May import the
registry port, plan, journal, oci, text and errors; never prints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from retention import oci
from retention.apply.control import RunControl
from retention.apply.outcomes import KEPT_PREFIX, UntagOutcome
from retention.errors import (
    DeleteDisabledError,
    JournalError,
    RegistryError,
    RetentionError,
    TransportError,
)
from retention.journal import Journal, TagKey, UntagIntentRecord
from retention.plan import Plan, Untag
from retention.registry.api import FetchedManifest, RegistryPort
from retention.text import first_line

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# after the client's retries: the registry is down or overloaded, every further untag would wait
_UNREACHABLE = frozenset({429, 502, 503, 504})

DELETE_TAG = "delete-tag"
THROW_AWAY = "throw-away"

# The OCI empty descriptor's blob (image-spec manifest.md, "Guidance for an Empty Descriptor").
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = oci.sha256_digest(EMPTY_CONFIG)
THROW_AWAY_ANNOTATION = "org.opencontainers.image.description"
NONCE_ANNOTATION = "retention.untag.nonce"


def throw_away_manifest(repository: str, tag: str, nonce: str) -> bytes:
    """The manifest the throw-away method pushes to `tag`: an OCI image manifest with the empty
    config and no layers, annotated as retention's. The tag and the run's nonce make its digest
    unique, so deleting it can remove no other tag, nor anything not pushed by this run."""
    doc = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_EMPTY, "digest": EMPTY_CONFIG_DIGEST, "size": 2},
        "layers": [],
        "annotations": {
            THROW_AWAY_ANNOTATION: f"retention untag: removes tag {repository}:{tag}; "
            "deleted at once",
            NONCE_ANNOTATION: nonce,
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def is_throw_away(raw: bytes) -> bool:
    """Whether `raw` is a throw-away manifest of retention's (`throw_away_manifest`)."""
    try:
        doc = oci.load_json(raw)  # bytes from the registry: deep JSON is a ValueError too
    except ValueError:
        return False
    return (
        isinstance(doc, dict)
        and doc.get("mediaType") == oci.OCI_MANIFEST
        and doc.get("layers") == []
        and isinstance(doc.get("config"), dict)
        and doc["config"].get("digest") == EMPTY_CONFIG_DIGEST
        and isinstance(doc.get("annotations"), dict)
        and NONCE_ANNOTATION in doc["annotations"]
    )


class _Stop(Exception):
    """Internal: an error that stops the untag phase (the registry is gone, deletion disabled,
    the journal unwritable)."""

    def __init__(self, error: RetentionError) -> None:
        super().__init__(error.message)
        self.error = error


class UntagRun:
    """The untag phase of one apply: `run()` returns one outcome per planned untag, sorted by
    (repository, tag). An error that stops it (deletion disabled, the registry gone, the
    journal unwritable) stops the whole run through `control`."""

    def __init__(
        self,
        plan: Plan,
        client: RegistryPort,
        journal: Journal,
        control: RunControl,
        *,
        nonce: str,
        policy_keeps: Mapping[TagKey, str],
    ) -> None:
        self.plan = plan
        self.client = client
        self.journal = journal
        self.ctl = control
        self.nonce = nonce
        self.policy_keeps = policy_keeps
        self.methods = dict(plan.untag_methods)
        # what earlier runs of this plan did, read once (the journal can be long)
        self.finished = journal.state.untags_finished()
        self.earlier = journal.state.untag_intents()

    def run(self) -> tuple[UntagOutcome, ...]:
        # Repositories in parallel, the untags of one repository one after another: distribution
        # 2.8 answers 500 to concurrent DELETEs in one repository (each walks its tag folders
        # while another removes one; measured in test_untag_registry.py's concurrent runs).
        by_repo: dict[str, list[Untag]] = {}
        for untag in sorted(self.plan.untags, key=lambda u: (u.repository, u.tag)):
            by_repo.setdefault(untag.repository, []).append(untag)
        done = self.ctl.map(self._repository, by_repo.values())
        outcomes = [o for _, group in done for o in group]
        return tuple(self._confirm_unlisted(outcomes))

    def _repository(self, untags: list[Untag]) -> list[UntagOutcome]:
        repo = untags[0].repository
        if repo not in self.methods and self.ctl.not_attempted() is None:
            # a plan made from a saved inventory (no registry then) or edited: probe it now
            self.methods[repo] = self._probe(repo)
        return [self._one(u) for u in untags]

    def _probe(self, repo: str) -> str:
        """`RegistryClient.probe_tag_delete` (a random tag, never a real one); a refused probe
        falls back to the throw-away method, as `plan` does."""
        try:
            return DELETE_TAG if self.client.probe_tag_delete(repo) else THROW_AWAY
        except RegistryError as exc:
            log.warning(
                "%s: whether the registry deletes tags could not be probed (%s); untags there "
                "use the throw-away method",
                repo,
                first_line(exc.diagnostics()),
            )
            return THROW_AWAY

    # -- one untag ----------------------------------------------------------------------------

    def _one(self, untag: Untag) -> UntagOutcome:
        if (untag.repository, untag.tag) in self.finished:
            return UntagOutcome(untag, "resumed", "an earlier run of this plan removed it")
        not_attempted = self.ctl.not_attempted()
        if not_attempted is not None:
            return UntagOutcome(untag, "failed", not_attempted)
        try:
            outcome = self._attempt(untag)
        except _Stop as stop:
            self.ctl.abort(stop.error)
            outcome = UntagOutcome(untag, "failed", first_line(stop.error.diagnostics()))
        except RegistryError as exc:  # a refused push among them: this repository only
            outcome = UntagOutcome(untag, "failed", first_line(exc.diagnostics()))
        self._journal_outcome(outcome)
        return outcome

    def _attempt(self, untag: Untag) -> UntagOutcome:
        repo, tag = untag.repository, untag.tag
        method = self.methods.get(repo, THROW_AWAY)  # set for every repository by now
        # an earlier attempt (failed, or cut short by a crash) may have left its throw-away
        earlier = self.earlier.get((repo, tag))
        if earlier is not None and earlier.throwaway is not None:
            self._finish_half_done(earlier)
        if (repo, tag) in self.policy_keeps:
            return UntagOutcome(untag, "kept", KEPT_PREFIX + self.policy_keeps[(repo, tag)])
        # re-resolved right before (a GET: its bytes are what restore puts back)
        current = self._call(lambda: self.client.get_manifest(repo, tag))
        if current is not None and untag.digest != current.digest and is_throw_away(current.raw):
            # another run's throw-away, left by a failure (a concurrent apply of this plan):
            # removing it is what that run was doing
            log.info("%s:%s: deleting a throw-away manifest another run left", repo, tag)
            left = current.digest
            self._call(lambda: self.client.delete_manifest(repo, left))
            current = self._call(lambda: self.client.get_manifest(repo, tag))
        if current is None:
            if tag not in self._call(lambda: self.client.list_tags(repo)):
                return UntagOutcome(untag, "gone", "the tag is gone already", method)
            # listed, its manifest gone: a dangling tag (planned so, or left by a crash)
        elif current.digest != untag.digest:
            return UntagOutcome(
                untag, "stale", f"the tag points at {current.digest} now, not as planned", method
            )
        if method == DELETE_TAG and current is not None:
            return self._delete_tag(untag, current)
        return self._throw_away(untag, method, current)

    def _delete_tag(self, untag: Untag, current: FetchedManifest) -> UntagOutcome:
        repo, tag = untag.repository, untag.tag
        self._journal(
            lambda: self.journal.untag_intent(
                repository=repo,
                tag=tag,
                digest=current.digest,
                media_type=current.media_type,
                raw=current.raw,
                method=DELETE_TAG,
                throwaway=None,
            )
        )
        self._call(lambda: self.client.delete_tag(repo, tag))
        return self._verify(untag, DELETE_TAG)

    def _throw_away(
        self, untag: Untag, method: str, current: FetchedManifest | None
    ) -> UntagOutcome:
        repo, tag = untag.repository, untag.tag
        body = throw_away_manifest(repo, tag, self.nonce)
        throwaway = oci.sha256_digest(body)
        self._journal(
            lambda: self.journal.untag_intent(
                repository=repo,
                tag=tag,
                digest=None if current is None else current.digest,
                media_type=None if current is None else current.media_type,
                raw=None if current is None else current.raw,
                method=THROW_AWAY,
                throwaway=throwaway,
            )
        )
        self._call(lambda: self.client.upload_blob(repo, EMPTY_CONFIG))
        self._call(lambda: self.client.put_manifest(repo, tag, body, oci.OCI_MANIFEST))
        now = self._call(lambda: self.client.head_manifest(repo, tag))
        self._call(lambda: self.client.delete_manifest(repo, throwaway))
        if now is None or now.digest != throwaway:
            where = "nothing" if now is None else now.digest
            return UntagOutcome(
                untag,
                "stale",
                f"the tag was pushed to while it was being removed (it points at {where}); "
                "the throw-away manifest was deleted, the tag left alone",
                THROW_AWAY,
            )
        if method == DELETE_TAG and self._call(lambda: self.client.head_manifest(repo, tag)):
            # a registry that deletes tags may keep them when their digest goes (crane's does)
            self._call(lambda: self.client.delete_tag(repo, tag))
        return self._verify(untag, THROW_AWAY)

    def _verify(self, untag: Untag, method: str) -> UntagOutcome:
        """The tag answers 404 now, and the image it shared is still there."""
        repo, tag, digest = untag.repository, untag.tag, untag.digest
        still = self._call(lambda: self.client.head_manifest(repo, tag))
        if still is not None:
            return UntagOutcome(
                untag, "failed", f"the registry still resolves the tag (to {still.digest})", method
            )
        if (
            digest is not None
            and self._call(lambda: self.client.head_manifest(repo, digest)) is None
        ):
            return UntagOutcome(
                untag,
                "failed",
                f"the tag is gone, and so is its image {digest}: the registry deleted more than "
                "the tag (`retention restore JOURNAL --tag` puts it back)",
                method,
            )
        return UntagOutcome(untag, "untagged", None, method)

    def _finish_half_done(self, intent: UntagIntentRecord) -> None:
        """An earlier run pushed (or was about to push) a throw-away manifest and did not finish:
        delete it if it is there, so no throw-away manifest outlives a re-run."""
        repo, throwaway = intent.repository, intent.throwaway
        assert throwaway is not None
        if self._call(lambda: self.client.head_manifest(repo, throwaway)) is not None:
            log.info("%s: deleting the throw-away manifest an earlier run left", repo)
            self._call(lambda: self.client.delete_manifest(repo, throwaway))

    # -- after all untags ---------------------------------------------------------------------

    def _confirm_unlisted(self, outcomes: list[UntagOutcome]) -> list[UntagOutcome]:
        """One tags/list per repository with an untag done: a tag still listed is a dangling
        tag left behind (a link without its manifest), not a success."""
        repos = sorted({o.untag.repository for o in outcomes if o.kind == "untagged"})
        listed: dict[str, frozenset[str] | str] = {}
        for repo in repos:
            try:
                listed[repo] = frozenset(self.client.list_tags(repo))
            except RegistryError as exc:
                listed[repo] = first_line(exc.diagnostics())
        confirmed: list[UntagOutcome] = []
        for outcome in outcomes:
            tags = listed.get(outcome.untag.repository)
            if outcome.kind == "untagged" and tags is not None:
                why = tags if isinstance(tags, str) else None
                if why is None and outcome.untag.tag in tags:
                    why = "tags/list still lists the tag (a dangling tag): run apply again"
                if why is not None:
                    outcome = UntagOutcome(outcome.untag, "failed", why, outcome.method)
                    self._journal_outcome(outcome)
            confirmed.append(outcome)
        return confirmed

    # -- helpers ------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], _T]) -> _T:
        """One registry call; deletion disabled or an unreachable registry stops every untag.
        Any other RegistryError (a refused push, a 500) fails this untag only."""
        try:
            return fn()
        except DeleteDisabledError as exc:
            raise _Stop(exc) from exc
        except TransportError as exc:
            if exc.status is None or exc.status in _UNREACHABLE:
                raise _Stop(exc) from exc
            raise  # a 500 is this request's failure: a re-run retries the untag

    def _journal(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except JournalError as exc:
            raise _Stop(exc) from exc

    def _journal_outcome(self, outcome: UntagOutcome) -> None:
        if outcome.kind == "resumed":
            return
        try:
            self.journal.untag_outcome(
                "done" if outcome.kind == "untagged" else outcome.kind,
                repository=outcome.untag.repository,
                tag=outcome.untag.tag,
                reason=outcome.reason,
            )
        except JournalError as exc:
            self.ctl.abort(exc)
