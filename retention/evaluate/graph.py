"""PURE phases 2 and 3 of a repository's evaluation, over its manifests: D, the grounded
deletions, is the least set closed under "a tagged manifest all of whose tags are not kept or
follow a subject in D; an untagged platform manifest of an index in D; an untagged referrer of a
subject in D". K, the kept manifests, is everything else, closed under "a kept X keeps Y": index
→ children, artifact → subject, subject → its attachments and referrers. Every grounding step of
D has a keep edge the same way round, so D - K is still grounded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from retention.evaluate.context import FOLLOW, KEEP, TagState, Untagged
from retention.model import Image


def links(images: dict[str, Image]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """child -> parent indexes, and subject -> untagged-or-not referrers, all within the repo."""
    parents: dict[str, set[str]] = defaultdict(set)
    referrers: dict[str, list[str]] = defaultdict(list)
    for digest in sorted(images):
        image = images[digest]
        for child in image.children:
            if child in images and child != digest:
                parents[child].add(digest)
        if image.subject is not None and image.subject in images and image.subject != digest:
            referrers[image.subject].append(digest)
    return {c: sorted(p) for c, p in parents.items()}, dict(referrers)


@dataclass(slots=True)
class Seeds:
    """Where the worklist of phase 2 starts, and the edges it follows."""

    queue: list[str] = field(default_factory=list)  # deleted unless the keep closure reaches them
    pending: dict[str, int] = field(default_factory=dict)  # digest -> subjects not yet deleted
    follow_deps: dict[str, list[str]] = field(  # subject -> manifests following it
        default_factory=lambda: defaultdict(list)
    )
    attached: dict[str, list[str]] = field(  # same, for every manifest: keep edges
        default_factory=lambda: defaultdict(list)
    )


def seeds(by_digest: dict[str, list[TagState]], roots: dict[str, Untagged]) -> Seeds:
    """The tagged manifests none of whose tags keeps them, and the untagged ones a rule
    deletes; a manifest whose tags follow subjects waits for those subjects."""
    out = Seeds()
    for digest in sorted(by_digest):
        sts = by_digest[digest]
        for st in sts:
            if st.subject is not None:
                out.attached[st.subject].append(digest)
        if any(st.state == KEEP for st in sts):
            continue
        follows = [st.subject for st in sts if st.state == FOLLOW and st.subject is not None]
        for subject in follows:
            out.follow_deps[subject].append(digest)
        if follows:
            out.pending[digest] = len(follows)
        else:
            out.queue.append(digest)
    out.queue.extend(d for d, r in roots.items() if r.delete)
    return out


class Graph:
    """Phases 2 and 3 over one repository's manifests."""

    def __init__(
        self,
        images: dict[str, Image],
        by_digest: dict[str, list[TagState]],
        referrers: dict[str, list[str]],
        start: Seeds,
        protected: frozenset[str],
    ) -> None:
        self.images = images
        self.by_digest = by_digest
        self.referrers = referrers
        self.follow_deps = start.follow_deps
        self.attached = start.attached
        self.protected = protected

    def decide(self, queue: list[str], waiting: dict[str, int]) -> tuple[set[str], set[str]]:
        """(deleted, kept): the grounded deletions from `queue`, less the keep closure."""
        deleted = self._grounded(queue, waiting)
        # protect.digests wins over every rule; the closure keeps their children and referrers
        deleted -= self.protected
        kept = self._keep_closure(set(self.images) - deleted)
        return deleted - kept, kept

    def _grounded(self, seeds: list[str], waiting: dict[str, int]) -> set[str]:
        images, by_digest = self.images, self.by_digest
        pending = dict(waiting)
        queue = list(seeds)
        deleted: set[str] = set()
        i = 0
        while i < len(queue):
            digest = queue[i]
            i += 1
            if digest in deleted:
                continue
            deleted.add(digest)
            queue.extend(c for c in images[digest].children if c in images and c not in by_digest)
            for dep in self.follow_deps.get(digest, ()):
                pending[dep] -= 1
                if pending[dep] == 0:
                    queue.append(dep)
            queue.extend(r for r in self.referrers.get(digest, ()) if r not in by_digest)
        return deleted

    def _keep_closure(self, kept: set[str]) -> set[str]:
        images = self.images
        stack = sorted(kept)
        while stack:
            digest = stack.pop()
            image = images[digest]
            targets: list[str] = [c for c in image.children if c in images]
            if image.subject is not None and image.subject in images:
                targets.append(image.subject)
            targets.extend(
                st.subject for st in self.by_digest.get(digest, ()) if st.subject is not None
            )
            targets.extend(self.referrers.get(digest, ()))
            targets.extend(self.attached.get(digest, ()))
            for target in targets:
                if target not in kept:
                    kept.add(target)
                    stack.append(target)
        return kept
