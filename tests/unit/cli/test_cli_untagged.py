"""The CLI's pure text for untagged manifests: `explain REPO@DIGEST` targets and output, and
`inventory` in text, CSV and JSON for a storage inventory."""

from __future__ import annotations

import csv
import io

import pytest

from retention.cli.explain import parse_target
from retention.cli.render import (
    explanation_text,
    inventory_csv,
    inventory_json,
    inventory_text,
)
from retention.errors import RetentionError
from retention.evaluate import explain
from retention.oci import format_time, parse_created
from tests.unit.evalkit import NOW, D, ago, image, inventory, policy, repo, rule

PUSHED = ago(20)
STORE = inventory(
    repo(
        "apps/web",
        {"latest": "CUR"},
        [image("CUR", ago(1), pushed_at=ago(1)), image("OLD", ago(20), pushed_at=PUSHED)],
        history=[("latest", "OLD", ago(20)), ("latest", "CUR", ago(1))],
    ),
    source="storage",
)
API = inventory(repo("apps/web", {"latest": "CUR"}, [image("CUR", ago(1))]))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("apps/web", ("apps/web", None, None)),
        ("apps/web:v1", ("apps/web", "v1", None)),
        (f"apps/web@{D('OLD')}", ("apps/web", None, D("OLD"))),
        (f"127.0.0.1:5000/apps/web@{D('OLD')}", ("apps/web", None, D("OLD"))),
    ],
    ids=["repo", "repo-tag", "repo-digest", "host-repo-digest"],
)
def test_explain_target(target: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse_target(target, "http://127.0.0.1:5000") == expected


def test_explain_target_malformed_digest() -> None:
    with pytest.raises(RetentionError, match="not a digest"):
        parse_target("apps/web@sha256:zz", "http://127.0.0.1:5000")


def test_explanation_of_an_untagged_manifest() -> None:
    p = policy(rule("untagged", untagged=True, last=0))
    text = explanation_text(explain(p, STORE, NOW, "apps/web", digest=D("OLD")))
    assert text.splitlines() == [
        f"apps/web@{D('OLD')}  20 days  (rule untagged, rank 1, untagged)",
        f"    pushed: {format_time(PUSHED)}",
        f"    was: `latest` until {format_time(ago(1))}",
        "    deleted: untagged (was `latest` until 2024-05-31), rule `untagged`: rank 1 > 0",
    ]


def test_inventory_text_lists_untagged() -> None:
    text = inventory_text(STORE)
    line = next(x for x in text.splitlines() if D("OLD")[:19] in x)
    assert line.split()[0] == "(untagged)"
    assert line.endswith(format_time(PUSHED))
    assert D("CUR")[:19] in text  # the tag row is still there
    assert "(untagged)" not in inventory_text(API)


def test_inventory_csv_marks_untagged() -> None:
    rows = list(csv.DictReader(io.StringIO(inventory_csv(STORE))))
    assert [(r["tag"], r["digest"], r["untagged"]) for r in rows] == [
        ("latest", D("CUR"), "false"),
        ("", D("OLD"), "true"),
    ]
    assert rows[1]["pushed_at"] == format_time(PUSHED)
    api_header = inventory_csv(API).splitlines()[0]
    assert api_header == "repository,tag,digest,media_type,kind,created,size"


def test_inventory_json_marks_untagged() -> None:
    images = {i["digest"]: i for i in inventory_json(STORE)["repositories"][0]["images"]}
    assert images[D("OLD")]["untagged"] is True
    assert parse_created(images[D("OLD")]["pushed_at"]) == PUSHED
    assert images[D("CUR")]["untagged"] is False
    api_images = inventory_json(API)["repositories"][0]["images"]
    assert "untagged" not in api_images[0]
