"""PURE untags of one repository (`settings.untag`, docs/policy.md): after the keep closure, a
tag its rule does not keep on a manifest that stays is removed alone; a dangling tag (listed, its
manifest gone) is decided by its name. Deletions never change (docs/decisions.md, "Untag: policy
and plan").
"""

from __future__ import annotations

from dataclasses import dataclass

from retention.evaluate.context import DELETE, UNTAG, Context, TagState
from retention.model import Repository

DANGLING = "a dangling tag (listed, its manifest gone)"


@dataclass(frozen=True, slots=True)
class Dangling:
    """The decision on one dangling tag: the rule that owns it, whether that rule keeps it, and
    why. `doomed` (owned, not by `keep: all`): untagged with settings.untag, else kept."""

    tag: str
    rule: int | None
    doomed: bool
    reason: str
    protected: bool = False


def mark_untags(by_digest: dict[str, list[TagState]], deleted: set[str], ctx: Context) -> None:
    """With settings.untag, every tag its rule does not keep (DELETE) on a manifest that is not
    deleted becomes UNTAG. Its reason, the rule's verdict, is completed by the entries."""
    if not ctx.policy.settings.untag:
        return
    for digest, sts in by_digest.items():
        if digest not in deleted:
            for st in sts:
                if st.state == DELETE:
                    st.state = UNTAG


def dangling_tags(repo: Repository, ctx: Context) -> list[Dangling]:
    """Each dangling tag of `repo`, by name: protected or selected by no rule, kept; owned by a
    rule that keeps all, kept; otherwise doomed, and untagged when settings.untag is on. `last`
    and `newer_than` do not apply: the tag names no image."""
    rules = ctx.rules_for(repo.name)
    out = []
    for tag in repo.dangling_tags:
        protected = ctx.protected_by(tag)
        if protected is not None:
            reason = f"{DANGLING}; protected by pattern `{protected}`"
            out.append(Dangling(tag, None, False, reason, protected=True))
            continue
        owner = ctx.owner(rules, tag)
        if owner is None:
            out.append(Dangling(tag, None, False, f"{DANGLING}; no rule selects it"))
            continue
        rule = ctx.policy.rules[owner]
        if rule.keep.all:
            out.append(Dangling(tag, owner, False, f"{DANGLING}; rule `{rule.name}` keeps all"))
        elif ctx.policy.settings.untag:
            out.append(Dangling(tag, owner, True, f"{DANGLING}; rule `{rule.name}` selects it"))
        else:
            reason = f"{DANGLING}; rule `{rule.name}` selects it, but settings.untag is false"
            out.append(Dangling(tag, owner, True, reason))
    return out
