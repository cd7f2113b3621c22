"""The plan file and the plan text: golden files, schema refusals, round trips (DESIGN §4)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.errors import PlanError
from retention.evaluate import evaluate
from retention.model import Inventory, Kind
from retention.plan import Plan, from_json, human_bytes, render_text, to_document, to_json
from retention.policy.model import MaxDeletions, Policy
from tests.unit.evalkit import NOW, ago, image, index, inventory, policy, repo, rule, sig

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "plans"
UPDATE = os.environ.get("RETENTION_UPDATE_GOLDEN") == "1"  # regenerate, then review the diff

MIB = 1024 * 1024


def small_policy() -> Policy:
    return policy(
        rule("release-candidates", repos=["apps/.*"], tags=[r".*-rc\d+"], last=1, newer_than="30d"),
        rule("ci-builds", tags=["main-.*", "pr-.*"], last=2),
        rule("everything-else", keep_all=True),
        protect=["latest", r"v?\d+\.\d+\.\d+"],
    )


def small_inventory(*, complete: bool = True) -> Inventory:
    web = repo(
        "apps/web",
        {
            "latest": "web-5",
            "v1.2.0": "web-5",
            "v1.3.0-rc1": "web-4",
            "v1.3.0-rc2": "web-3",
            "v1.2.0-rc1": "web-5",
            "main-aaaa": "web-1",
            "main-bbbb": "web-2",
            "main-cccc": "web-idx",
            sig("web-2"): "web-2-sig",
        },
        [
            image("web-1", ago(100), blobs=[("cfg-1", 1500), ("base", 30 * MIB), ("w1", 5 * MIB)]),
            image("web-2", ago(60), blobs=[("cfg-2", 1500), ("base", 30 * MIB), ("w2", 6 * MIB)]),
            image("web-2-sig", None, kind=Kind.ARTIFACT, blobs=[("sig-cfg", 233), ("sig", 1200)]),
            image("web-3", ago(45), blobs=[("cfg-3", 1500), ("base", 30 * MIB), ("w3", 7 * MIB)]),
            image("web-4", ago(40), blobs=[("cfg-4", 1500), ("base", 30 * MIB), ("w4", 7 * MIB)]),
            image("web-5", ago(20), blobs=[("cfg-5", 1500), ("base", 30 * MIB), ("w5", 8 * MIB)]),
            index("web-idx", ago(2), ["web-idx-amd64", "web-idx-arm64"], size=78 * MIB),
            image(
                "web-idx-amd64",
                ago(2),
                platform="linux/amd64",
                blobs=[("cfg-ia", 1400), ("base", 30 * MIB), ("wia", 9 * MIB)],
            ),
            image(
                "web-idx-arm64",
                ago(3),
                platform="linux/arm64",
                blobs=[("cfg-ib", 1400), ("base-arm", 28 * MIB), ("wib", 9 * MIB)],
            ),
        ],
    )
    ci = repo(
        "tools/ci",
        {
            "pr-1": "ci-1",
            "pr-2": "ci-2",
            "pr-3": "ci-3",
            "main-old": "ci-old",
            "unknown": "ci-unknown",
        },
        [
            index("ci-1", ago(90), ["ci-1-amd64", "ci-1-arm64"], size=98 * MIB),
            image("ci-1-amd64", ago(90), platform="linux/amd64", blobs=[("c1a", 50 * MIB)]),
            image("ci-1-arm64", ago(91), platform="linux/arm64", blobs=[("c1b", 48 * MIB)]),
            image("ci-2", ago(10), blobs=[("c2", 50 * MIB)]),
            image("ci-3", ago(5), blobs=[("c3", 50 * MIB)]),
            image("ci-old", ago(300), blobs=[("base", 30 * MIB), ("old", 2 * MIB)]),
            image("ci-unknown", None, created_raw="1970-01-01T00:00:01Z", blobs=[("u", 10)]),
        ],
    )
    return inventory(web, ci, complete=complete)


def small_plan(*, complete: bool = True) -> Plan:
    return evaluate(small_policy(), small_inventory(complete=complete), NOW)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_to_json_golden() -> None:
    check_golden("small.json", to_json(small_plan()))


def test_render_text_golden() -> None:
    check_golden("small.txt", render_text(small_plan(), now=NOW))


def test_render_text_show_kept_golden() -> None:
    check_golden("small-kept.txt", render_text(small_plan(), show_kept=True, now=NOW))


def test_render_text_partial_inventory_says_upper_bound() -> None:
    last = render_text(small_plan(complete=False), now=NOW).splitlines()[-1]
    assert last.endswith(
        "reclaimable after garbage collection "
        "(an upper bound: the inventory covers part of the registry)."
    )


def test_render_text_no_changes() -> None:
    plan = evaluate(policy(rule("all", keep_all=True)), small_inventory(), NOW)
    text = render_text(plan, now=NOW)
    assert text.splitlines()[-1] == "No changes."
    assert "to delete" not in text


def test_render_text_singular_summary() -> None:
    inv = inventory(repo("r", {"a": "A", "b": "B"}, [image("A", ago(1)), image("B", ago(2))]))
    plan = evaluate(policy(rule("all", last=1)), inv, NOW)
    assert render_text(plan, now=NOW).splitlines()[-1] == (
        "Plan: 1 image (1 tag) to delete in 1 repository, ~500 B reclaimable after garbage "
        "collection."
    )


def test_to_json_shape() -> None:
    doc = json.loads(to_json(small_plan()))
    assert list(doc) == sorted(doc)
    assert set(doc) == {
        "format_version",
        "generated_at",
        "inventory_source",
        "registry",
        "policy",
        "max_deletions",
        "summary",
        "deletions",
        "kept",
        "warnings",
    }
    assert doc["format_version"] == 1
    assert doc["generated_at"] == "2024-06-01T12:00:00Z"
    keys = [(e["repository"], e["digest"]) for e in doc["deletions"]]
    assert keys == sorted(keys)
    assert all(e["tags"] == sorted(e["tags"]) for e in doc["deletions"] + doc["kept"])


def test_to_json_is_deterministic_and_ends_with_newline() -> None:
    text = to_json(small_plan())
    assert text == to_json(small_plan())
    assert text.endswith("}\n")
    assert '\n  "deletions": [\n    {\n      "created"' in text  # 2-space indent


@pytest.mark.parametrize(
    "max_deletions",
    [MaxDeletions(count=500), MaxDeletions(percent=25), MaxDeletions(percent=2.5)],
    ids=str,
)
def test_round_trip(max_deletions: MaxDeletions) -> None:
    p = policy(*small_policy().rules, max_deletions=max_deletions)
    plan = evaluate(p, small_inventory(complete=False), NOW)
    text = to_json(plan)
    again = from_json(text, "plan.json")
    assert to_json(again) == text
    assert again == plan
    assert again.max_deletions == str(max_deletions)


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(to_json(small_plan()))
    return doc


def _set(path: str, value: Any) -> dict[str, Any]:
    doc = _doc()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = doc
    for p in parents:
        target = target[p]
    target[last] = value
    return doc


def _without(path: str) -> dict[str, Any]:
    doc = _doc()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = doc
    for p in parents:
        target = target[p]
    del target[last]
    return doc


LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            json.dumps(_set("deletions.3.media_type", LAYER)),
            f"plan.json: $.deletions[3].media_type: '{LAYER}' is not a manifest media type",
            id="layer-media-type",
        ),
        pytest.param(
            json.dumps(_set("deletions.0.media_type", "application/vnd.oci.image.config.v1+json")),
            "plan.json: $.deletions[0].media_type: 'application/vnd.oci.image.config.v1+json' "
            "is not a manifest media type",
            id="config-media-type",
        ),
        pytest.param(
            json.dumps(_set("deletions.3.digest", "sha256:1234")),
            "plan.json: $.deletions[3].digest: 'sha256:1234' is not a manifest digest",
            id="short-digest",
        ),
        pytest.param(
            json.dumps(_set("deletions.1.digest", "SHA256:" + "A" * 64)),
            "plan.json: $.deletions[1].digest: 'SHA256:AAAA",
            id="uppercase-digest",
        ),
        pytest.param(
            json.dumps(_set("deletions.1.digest", "latest")),
            "plan.json: $.deletions[1].digest: 'latest' is not a manifest digest",
            id="tag-instead-of-digest",
        ),
        pytest.param(
            json.dumps(_set("deletions.1.parent", "sha256:zz")),
            "plan.json: $.deletions[1].parent: 'sha256:zz' is not a manifest digest",
            id="malformed-parent",
        ),
        pytest.param(
            json.dumps(_without("deletions.2.digest")),
            "plan.json: $.deletions[2]: 'digest' is a required property",
            id="missing-entry-field",
        ),
        pytest.param(
            json.dumps(_without("summary")),
            "plan.json: $: 'summary' is a required property",
            id="missing-top-level-field",
        ),
        pytest.param(
            json.dumps(_set("deletions.0.extra", 1)),
            "plan.json: $.deletions[0]: Additional properties are not allowed ('extra' was",
            id="unknown-field",
        ),
        pytest.param(
            json.dumps(_set("format_version", 2)),
            "plan.json: $.format_version: plan format version 2 is not supported "
            "(this retention reads version 1)",
            id="format-version-2",
        ),
        pytest.param(
            json.dumps(_set("format_version", "1")),
            "plan.json: $.format_version: plan format version '1' is not supported",
            id="format-version-string",
        ),
        pytest.param(
            json.dumps(_without("format_version")),
            "plan.json: $: 'format_version' is a required property",
            id="format-version-missing",
        ),
        pytest.param(
            json.dumps(_set("generated_at", "2024-06-01 12:00")),
            "plan.json: $.generated_at: '2024-06-01 12:00' is not a UTC time",
            id="bad-time",
        ),
        pytest.param(
            json.dumps(_set("generated_at", "2024-13-01T12:00:00Z")),
            "plan.json: $.generated_at: '2024-13-01T12:00:00Z' is not a valid time",
            id="impossible-time",
        ),
        pytest.param(
            json.dumps(_set("summary.images", -1)),
            "plan.json: $.summary.images: -1 is less than the minimum of 0",
            id="negative-count",
        ),
        pytest.param(
            json.dumps(_set("deletions.1", _doc()["deletions"][0])),
            "is listed twice",
            id="duplicate-entry",
        ),
        pytest.param("{not json", "plan.json: not valid JSON: ", id="not-json"),
        pytest.param("", "plan.json: not valid JSON: ", id="empty-file"),
        pytest.param("[1, 2]", "plan.json: $: a plan is a JSON object, not an array", id="array"),
        pytest.param('"plan"', "plan.json: $: a plan is a JSON object, not a string", id="string"),
    ],
)
def test_from_json_refuses(text: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        from_json(text, "plan.json")
    assert message in info.value.message
    assert info.value.hint is not None and "retention plan" in info.value.hint


def test_from_json_reports_every_problem() -> None:
    doc = _set("deletions.0.digest", "x")
    doc["deletions"][1]["media_type"] = LAYER
    with pytest.raises(PlanError) as info:
        from_json(json.dumps(doc), "p.json")
    lines = info.value.message.splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "$.deletions[0].digest",
        "$.deletions[1].media_type",
    ]


def test_from_json_accepts_bytes_and_sha512() -> None:
    doc = _set("deletions.0.digest", "sha512:" + "ab" * 64)
    plan = from_json(json.dumps(doc).encode(), "plan.json")
    assert any(e.digest.startswith("sha512:") for e in plan.deletions)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_render_text_ages_from_now() -> None:
    text = render_text(small_plan(), now=NOW + timedelta(days=10))
    assert "(110 days ago)" in text


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "partial"])
def test_to_json_equals_the_standard_encoder(complete: bool) -> None:
    plan = small_plan(complete=complete)
    reference = json.dumps(to_document(plan), sort_keys=True, indent=2, ensure_ascii=False)
    assert to_json(plan) == reference + "\n"


def test_to_json_of_an_empty_plan_equals_the_standard_encoder() -> None:
    plan = evaluate(policy(rule("x", keep_all=True)), inventory(), NOW)
    reference = json.dumps(to_document(plan), sort_keys=True, indent=2, ensure_ascii=False)
    assert to_json(plan) == reference + "\n"
    assert '"deletions": []' in reference
