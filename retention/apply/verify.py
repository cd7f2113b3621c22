"""Re-verification against the registry, before the first DELETE: the tags of each repository
listed again, tags the plan never saw resolved, and every planned entry proven to be still what
the plan saw (one request per listed tag; the GET also yields the bytes the journal keeps).
Request budget and reasons: docs/decisions.md (Apply).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping

from retention import oci
from retention.apply.control import RunControl
from retention.apply.outcomes import Check, NotManifest, Skip, Verified, reason_of
from retention.errors import AuthError, ProtocolError, RegistryError, RetentionError, TransportError
from retention.journal import Journal, Key
from retention.plan import Entry, Plan
from retention.registry.api import FetchedManifest, RegistryPort

# The package's logger, as before the package was split: log records name `retention.apply`.
log = logging.getLogger("retention.apply")

# Statuses that say "try again later", not "this is not a manifest" (after the client's retries).
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


def _transient(exc: RegistryError) -> bool:
    """An answer that says nothing about the digest: a connection failure, retries exhausted, an
    auth problem. Any other error status (2.8 answers 500 UNKNOWN for a layer or config digest
    asked for as a manifest) means the registry does not hold it as a manifest."""
    if isinstance(exc, AuthError):
        return True
    if exc.status is None:
        return isinstance(exc, TransportError)
    return exc.status in _TRANSIENT_STATUSES


class Verifier:
    """The checks of one run against the registry; each adds to `skips` what it leaves alone."""

    def __init__(
        self,
        plan: Plan,
        client: RegistryPort,
        journal: Journal,
        control: RunControl,
        *,
        verify_kept: bool,
    ) -> None:
        self.plan = plan
        self.client = client
        self.journal = journal
        self.ctl = control
        self.verify_kept = verify_kept
        self.entries: dict[Key, Entry] = {(e.repository, e.digest): e for e in plan.deletions}

    def list_tags(
        self, repos: list[str], todo: list[Key], skips: dict[Key, Skip]
    ) -> dict[str, frozenset[str]]:
        """The tags of each repository now; an entry of a repository that cannot be listed
        fails."""

        def one(repo: str) -> frozenset[str] | RetentionError:
            if self.ctl.stopping() and self.ctl.abort_error is not None:
                return self.ctl.abort_error
            try:
                return frozenset(self.client.list_tags(repo))
            except RegistryError as exc:
                if exc.status == 404:  # NAME_UNKNOWN: the repository holds nothing any more
                    return frozenset()
                self.ctl.stop_on_transport(exc)
                return exc

        listed: dict[str, frozenset[str]] = {}
        for repo, result in self.ctl.map(one, repos):
            if isinstance(result, RetentionError):
                reason = f"could not list the tags of {repo}: {reason_of(result)}"
                for key in todo:
                    if key[0] == repo:
                        skips[key] = Skip("failed", reason)
            else:
                listed[repo] = result
        return listed

    def check_new_tags(
        self, listed: Mapping[str, frozenset[str]], todo: list[Key], skips: dict[Key, Skip]
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
            stopped = self.ctl.not_attempted()
            if stopped is not None:
                return {}, stopped
            return self._holds(repo, tag, "kept tag" if tag in seen[repo] else "new tag")

        planned = set(todo)
        for (repo, _tag), (holds, error) in self.ctl.map(one, new):
            if error is not None:
                # Unknown means keep: this tag might point at any planned digest of the repo.
                for key in todo:
                    if key[0] == repo and key not in skips:
                        skips[key] = Skip("failed", error)
                continue
            for digest, reason in holds.items():
                key = (repo, digest)
                if key in planned and key not in skips:
                    skips[key] = Skip("stale", reason)

    def _holds(self, repo: str, tag: str, kind: str) -> tuple[dict[str, str], str | None]:
        """The digests `tag` holds on to, each with the reason; or why it could not be read."""
        holds: dict[str, str] = {}
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
                self.ctl.stop_on_transport(exc)
                return holds, f"could not resolve {kind} {repo}:{tag}: {reason_of(exc)}"
            if ref is not None:
                holds[ref.digest] = f"{label} points at it"
            return holds, None
        except RegistryError as exc:
            self.ctl.stop_on_transport(exc)
            return holds, f"could not resolve {kind} {repo}:{tag}: {reason_of(exc)}"
        if fetched is None:  # deleted again since the listing
            return holds, None
        m = fetched.manifest
        holds.setdefault(m.digest, f"{label} points at it")
        for child in m.children:
            holds.setdefault(child.digest, f"{label} is an index that references it")
        if m.subject is not None:
            holds.setdefault(m.subject.digest, f"{label} is an artifact of it")
        return holds, None

    def verifier(self, listed: Mapping[str, frozenset[str]]) -> Callable[[Key], Check]:
        """The check of one planned entry, given the tags listed now; safe on the pool."""

        def verify(key: Key) -> Check:
            stopped = self.ctl.not_attempted()
            if stopped is not None:
                return Skip("failed", stopped)
            try:
                return self._verify(self.entries[key], listed.get(key[0], frozenset()))
            except RegistryError as exc:
                self.ctl.stop_on_transport(exc)
                return Skip("failed", reason_of(exc))

        return verify

    def _verify(self, e: Entry, listed: frozenset[str]) -> Check:
        """Prove the entry is still what the plan saw, with one request per listed tag (one for
        an entry without tags); the GET also yields the bytes the journal keeps."""
        repo, digest = e.repository, e.digest
        present = [t for t in e.tags if t in listed]
        fetched: FetchedManifest | None = None
        answered: list[str] = []
        dangling: list[str] = []
        for tag in present:
            if fetched is None:
                try:
                    got = self.client.get_manifest(repo, tag)
                except ProtocolError as exc:
                    return Skip("stale", f"tag {tag} now points at an unreadable manifest: {exc}")
                if got is None:
                    dangling.append(tag)
                    continue
                if got.manifest.digest != digest:
                    return Skip("stale", f"tag {tag} moved to {got.manifest.digest}")
                fetched = got
            else:
                ref = self.client.head_manifest(repo, tag)
                if ref is None:
                    dangling.append(tag)
                    continue
                if ref.digest != digest:
                    return Skip("stale", f"tag {tag} moved to {ref.digest}")
            answered.append(tag)
        if fetched is None:
            try:
                fetched = self.client.get_manifest(repo, digest)
            except RegistryError as exc:
                if _transient(exc):
                    raise
                return NotManifest(
                    f"the registry does not serve it as a manifest ({exc.status} "
                    f"{exc.code or ''}: {exc.message})"
                )
            if fetched is None:
                if dangling:
                    return self._dangling(e, dangling)
                return self._gone_or_blob(e)
        if fetched.manifest.digest != digest:
            return NotManifest(f"the registry answered digest {fetched.manifest.digest}")
        return Verified(
            raw=fetched.raw,
            media_type=fetched.media_type,
            manifest=fetched.manifest,
            tags=tuple(answered),
        )

    def _gone_or_blob(self, e: Entry) -> Check:
        """A digest the registry does not serve as a manifest (404): gone, unless the repository
        holds it as a blob. Registries differ here (docs/registries.md): 2.8 refuses
        /manifests/<blob digest> outright, 3.x and others answer 404, so the blob endpoint
        decides, and a plan entry naming a layer or config is refused whatever the registry.
        A manifest this plan deleted in an earlier run is in the journal: gone, no request."""
        if (e.repository, e.digest) not in self.journal.state.intents() and self.client.blob_exists(
            e.repository, e.digest
        ):
            return NotManifest("the registry serves it as a blob, not as a manifest")
        return Skip("gone", "already gone (404)")

    def _dangling(self, e: Entry, tags: list[str]) -> Check:
        """Tags still listed whose manifest is gone: a registry killed mid-DELETE. Re-PUT the
        manifest from the journal, then DELETE it by digest again, which removes the tags too."""
        intent = self.journal.state.intents().get((e.repository, e.digest))
        names = ", ".join(tags)
        if intent is None:
            return Skip(
                "failed",
                f"tag(s) {names} are dangling (listed, but the manifest is gone) and the journal "
                "holds no copy of the manifest to repair them; push the image to the tag again "
                "and make a new plan",
            )
        try:
            manifest = oci.parse_manifest(intent.raw, intent.media_type, intent.digest)
        except ProtocolError as exc:
            return Skip("failed", f"the journal's copy of the manifest is unreadable: {exc}")
        if oci.sha256_digest(intent.raw) != e.digest:
            return Skip("failed", "the journal's copy of the manifest does not match its digest")
        log.warning("%s@%s: repairing dangling tag(s) %s", e.repository, e.digest, names)
        return Verified(
            raw=intent.raw,
            media_type=intent.media_type,
            manifest=manifest,
            tags=tuple(tags),
            repair=True,
        )
