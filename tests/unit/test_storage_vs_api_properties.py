"""The storage inventory against the API's, over random registries (docs/decisions.md, "Storage
inventory" and "Untagged manifests and rules"): both inventories are cut from ONE generated
registry. The API sees what its tags reach (tags, then index children); the storage sees that,
plus manifests no tag reaches: untagged images, untagged indexes of them, and referrers (of a
tagged image, of an untagged one, or of a subject that is gone).

- With nothing untagged, the two plans are byte for byte the same but `inventory_source`.
- With untagged manifests, every entry of the API plan is in the storage plan, byte for byte and
  with the same decision; the storage plan only adds entries with no tags.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from retention.evaluate import evaluate
from retention.model import Image, Inventory, Kind, Repository
from retention.plan import Plan, to_document, to_json
from retention.policy.model import Policy
from tests.unit.evalkit import NOW, D, image, rule
from tests.unit.evaluate.test_evaluate_properties import BLOBS, COMMON, inventories, policies

EXTRA = [f"s{i}" for i in range(6)]  # manifests only the storage sees
SETTLED = NOW - timedelta(days=40)  # push time of everything: past the one-hour floor


def _reached(r: Repository) -> Repository:
    """What the API walk finds: the tagged manifests and, through indexes, their children."""
    present = {i.digest: i for i in r.images}
    stack = [t.digest for t in r.tags if t.digest in present]
    seen = set(stack)
    while stack:
        for child in present[stack.pop()].children:
            if child in present and child not in seen:
                seen.add(child)
                stack.append(child)
    return replace(r, images=tuple(i for i in r.images if i.digest in seen))


@st.composite
def extras(draw: st.DrawFn, visible: list[str]) -> list[Image]:
    """Untagged images, untagged indexes of them, referrers (never listed by an index). A
    referrer's subject is one the API sees, another extra, or gone; an extra never lists a
    manifest the API sees, so nothing the API plans is held by what only the storage knows."""
    out: list[Image] = []
    for n, name in enumerate(EXTRA):
        kind = draw(st.sampled_from([Kind.IMAGE, Kind.IMAGE, Kind.INDEX, Kind.ARTIFACT]))
        hours = draw(st.none() | st.integers(-10, 24 * 90))
        created = NOW - timedelta(hours=hours) if hours is not None else None
        blobs = [
            (b, 100 + int(b[1:]) * 1000)
            for b in draw(st.lists(st.sampled_from([*BLOBS, "y1", "y2"]), max_size=2, unique=True))
        ]
        images = [i.digest for i in out if i.kind is Kind.IMAGE]
        if kind is Kind.INDEX and images:
            children = draw(st.lists(st.sampled_from(images), max_size=3, unique=True))
            made = image(name, created, kind=Kind.INDEX, manifest_size=300 + n)
            out.append(replace(made, children=tuple(children), pushed_at=SETTLED))
            continue
        subject = None
        if kind is Kind.ARTIFACT:
            subject = draw(st.sampled_from([*visible, *[i.digest for i in out], D("gone")]))
        made = image(name, created, blobs=blobs, manifest_size=500 + n, pushed_at=SETTLED)
        kind = Kind.ARTIFACT if subject is not None else Kind.IMAGE
        out.append(replace(made, kind=kind, subject=subject))
    return out


@st.composite
def registries(draw: st.DrawFn, with_extras: bool) -> tuple[Inventory, Inventory]:
    """(the API inventory, the storage inventory) of one generated registry."""
    api = draw(inventories())
    api = replace(api, repositories=tuple(_reached(r) for r in api.repositories))
    repos = []
    for r in api.repositories:
        images = [replace(i, pushed_at=SETTLED) for i in r.images]
        if with_extras:
            added = draw(extras([i.digest for i in r.images]))
            images.extend(draw(st.lists(st.sampled_from(added), unique_by=lambda i: i.digest)))
        repos.append(replace(r, images=tuple(sorted(images, key=lambda i: i.digest))))
    storage = replace(api, repositories=tuple(repos), source="storage")
    return api, storage


@st.composite
def storage_policies(draw: st.DrawFn) -> Policy:
    p = draw(policies())
    if draw(st.booleans()):
        keep = draw(st.sampled_from(["last", "newer", "both", "all"]))
        u = rule(
            "untagged",
            untagged=True,
            repos=draw(st.sampled_from([(), ("apps/.*",), ("lib",)])),
            keep_all=keep == "all",
            last=draw(st.integers(0, 2)) if keep in ("last", "both") else None,
            newer_than=draw(st.sampled_from(["1d", "10d"])) if keep in ("newer", "both") else None,
        )
        at = draw(st.integers(0, len(p.rules)))
        p = replace(p, rules=(*p.rules[:at], u, *p.rules[at:]))
    return p


def _now(data: st.DataObject) -> datetime:
    """`--as-of` moves `now` only; the inventory's `taken_at` stays NOW."""
    return NOW + timedelta(days=data.draw(st.sampled_from([0, 0, 1, 30])))


def _entries(plan: Plan, which: str) -> dict[tuple[str, str], str]:
    doc = to_document(plan)
    return {
        (e["repository"], e["digest"]): json.dumps(e, sort_keys=True, ensure_ascii=False)
        for e in doc[which]
    }


ATTACHMENT = "subject of kept attachment "


def _same_but_the_attachment_named(
    api: str, storage: str | None, visible: set[tuple[str, str]], repo: str
) -> None:
    """The one known difference (left open): a subject kept by its attachments names the first
    kept one by digest, and that may be a referrer only the storage sees. Same decision, same
    fields; the reason names another attachment."""
    assert storage is not None
    a, s = json.loads(api), json.loads(storage)
    assert {k: v for k, v in a.items() if k != "reason"} == {
        k: v for k, v in s.items() if k != "reason"
    }
    assert a["reason"].startswith(ATTACHMENT) and s["reason"].startswith(ATTACHMENT), (a, s)
    named = s["reason"].removeprefix(ATTACHMENT)
    assert not any(d.startswith(named) for r, d in visible if r == repo), (a, s)


@COMMON
@given(registries(with_extras=False), policies(), st.data())
def test_with_nothing_untagged_the_plans_are_the_same_bytes_but_inventory_source(
    pair: tuple[Inventory, Inventory], p: Policy, data: st.DataObject
) -> None:
    api, storage = pair
    now = _now(data)
    from_api = evaluate(p, api, now)
    from_storage = evaluate(p, storage, now)
    assert from_api.inventory_source == "api"
    assert from_storage.inventory_source == "storage"
    assert to_json(replace(from_storage, inventory_source="api")) == to_json(from_api)


@COMMON
@given(registries(with_extras=True), storage_policies(), st.data())
def test_storage_only_adds_untagged_entries_and_keeps_every_api_entry_byte_for_byte(
    pair: tuple[Inventory, Inventory], p: Policy, data: st.DataObject
) -> None:
    api, storage = pair
    now = _now(data)
    from_api, from_storage = evaluate(p, api, now), evaluate(p, storage, now)
    visible = {(r.name, i.digest) for r in api.repositories for i in r.images}
    for which in ("deletions", "kept"):
        a, s = _entries(from_api, which), _entries(from_storage, which)
        for key, text in a.items():
            if s.get(key) != text:
                _same_but_the_attachment_named(text, s.get(key), visible, key[0])
        for key in set(s) - set(a):
            assert key not in visible, (which, key)  # decided the other way: not an addition
            assert json.loads(s[key])["tags"] == [], (which, key)
