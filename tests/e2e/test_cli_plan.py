"""`retention plan` through `main(argv)` on the session registry: text and JSON, `-o` written
atomically and only once the plan exists, `--from-inventory` offline, `--detailed-exitcode`,
`--as-of`, `--show-kept`, `--repository`, and the errors a user meets (bad regex, bad date,
unreachable registry, unset ${VAR}) as one clear message with exit 1 and no traceback.

The expected deletions are written by hand from the scene's policy (tests/support/cliscene.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from retention.cli import main
from retention.plan import from_json as plan_from_json
from retention.plan import human_bytes
from retention.plan import to_json as plan_to_json
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed
from tests.support.cliscene import (
    AS_OF_TEXT,
    LATER_TEXT,
    Scene,
    closed_port_url,
    write_policy,
)


def _plan(scene: Scene, *extra: str) -> list[str]:
    return ["plan", "-p", str(scene.policy), "--as-of", AS_OF_TEXT, *scene.select, *extra]


def _deletions(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    return {(e["repository"], e["digest"]): tuple(e["tags"]) for e in doc["deletions"]}


def _bytes(*images: Pushed) -> int:
    blobs: dict[str, int] = {}
    for image in images:
        blobs.update(image.blob_sizes)
    return sum(blobs.values())


def test_text_plan_shows_deletions_reasons_warnings_and_the_summary_last(
    scene: Scene, registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_plan(scene)) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    # --as-of is when the policy was evaluated; the header also says when the inventory was taken
    assert re.fullmatch(
        re.escape(f"Plan for {registry.url} as of 2026-06-01T12:00:00Z, inventory taken ")
        + r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
        + re.escape(f" (policy {scene.policy})"),
        lines[0],
    ), lines[0]
    web, multi = scene.web, f"{scene.prefix}/multi"
    text = "\n".join(lines)
    assert f"{web}: 2 images (2 tags) to delete\n" in text
    assert (
        f"  - main-3  {scene.main3.digest}\n"
        "      created 2026-04-12 (50 days ago), "
        f"{human_bytes(scene.main3.size)}, image\n"
        "      rule `web`: rank 4 > 1 and 50 days old >= 7d\n"
    ) in text + "\n"
    assert f"  - {scene.sig3.tag}  {scene.sig3.digest}\n" in text
    assert f"      signature of deleted image {scene.main3.digest[:19]}\n" in text
    assert f"{multi}: 3 images (1 tag) to delete\n" in text
    for child in scene.index.children:
        assert f"    - (untagged)  {child.digest}\n" in text
        assert f"        {child.platform and 'platform ' + child.platform} of deleted index" in text
    # kept images only with --show-kept
    assert "  = " not in text and "main-1" not in text
    warnings = lines[lines.index("Warnings:") + 1 : -2]
    # `unused` selects no repository of this narrowed inventory, which says nothing about the
    # rest of the registry: no "owns no tag" warning for it
    assert warnings == [
        f"  ! 1 repository is matched by no rule (all their tags are kept): {scene.prefix}/other",
        "  ! 1 image owned by a rule with unknown created date: kept, taking no place in `last` "
        "(settings.unknown_age: keep)",
        "  ! the inventory covers only part of the registry: bytes_reclaimable is an upper bound",
    ]
    reclaimable = human_bytes(_bytes(scene.main3, scene.sig3, scene.index))
    assert lines[-1] == (
        f"Plan: 5 images (3 tags) to delete in 2 repositories, ~{reclaimable} reclaimable after "
        "garbage collection (an upper bound: the inventory covers part of the registry)."
    )
    assert err == ""  # the warnings are in the plan text: not repeated on stderr


def test_json_on_stdout_equals_the_output_file_and_is_deterministic(
    scene: Scene, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "plan.json"
    assert main(_plan(scene, "--format", "json", "-o", str(out_file))) == 0
    out, err = capsys.readouterr()
    assert out == out_file.read_text()
    doc = json.loads(out)
    assert _deletions(doc) == scene.deleted_at_as_of()
    assert doc["summary"]["bytes_reclaimable"] == _bytes(scene.main3, scene.sig3, scene.index)
    assert doc["summary"]["complete"] is False
    # json on stdout is data: the warnings go to stderr
    assert "WARNING: 1 repository is matched by no rule" in err
    # atomic: nothing but the result is left in the folder
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("xdg-")) == [
        "plan.json"
    ]
    assert main(_plan(scene, "--format", "json")) == 0
    again = json.loads(capsys.readouterr().out)
    # the same registry, policy and --as-of give the same plan; only the walk's wall clock moves
    assert again["generated_at"] >= doc["generated_at"]
    assert {**again, "generated_at": doc["generated_at"]} == doc
    assert plan_to_json(plan_from_json(out, "plan.json")) == out  # deterministic bytes


def test_quiet_with_output_writes_the_file_and_prints_nothing(
    scene: Scene, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "plan.json"
    assert main(["-q", *_plan(scene, "-o", str(out_file))]) == 0
    assert capsys.readouterr() == ("", "")
    assert _deletions(json.loads(out_file.read_text())) == scene.deleted_at_as_of()


def test_detailed_exitcode_is_2_with_deletions_and_0_without(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_plan(scene, "--detailed-exitcode")) == 2
    capsys.readouterr()
    other = ["--repository", f"{scene.prefix}/other"]
    assert main([*_plan(scene, "--detailed-exitcode"), *other]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "No changes."
    assert main(_plan(scene)) == 0  # without the flag, changes are not an exit code


def test_as_of_ten_days_later_moves_main_4_past_newer_than(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_plan(scene, "--format", "json")) == 0
    now = json.loads(capsys.readouterr().out)
    kept = {e["digest"]: e["reason"] for e in now["kept"]}
    assert kept[scene.main4.digest] == "younger than 7d (2 days old)"

    assert main([*_plan(scene, "--format", "json"), "--as-of", LATER_TEXT]) == 0
    later = json.loads(capsys.readouterr().out)
    assert later["evaluated_at"] == LATER_TEXT
    assert (
        later["generated_at"] == now["generated_at"] or later["generated_at"] > now["generated_at"]
    )
    assert _deletions(later) == scene.deleted_later()


def test_show_kept_lists_kept_images_with_their_reason(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_plan(scene, "--show-kept")) == 0
    text = capsys.readouterr().out
    web = scene.web
    assert f"{web}: 2 images (2 tags) to delete, 5 kept\n" in text
    assert f"{scene.prefix}/other: 0 images (0 tags) to delete, 1 kept\n" in text
    for tags, image, reason in [
        ("main-1", scene.main1, "kept: rule `web`: the most recent (rank 1)"),
        ("latest, main-2", scene.main2, "kept: `latest`: protected by pattern `latest`"),
        ("main-4", scene.main4, "kept: rule `web`: younger than 7d (2 days old)"),
        ("epoch", scene.epoch, "kept: rule `web`: age unknown (created 1970-01-01T00:00:00Z)"),
        (scene.sig1.tag, scene.sig1, f"kept: signature of kept image {scene.main1.digest[:19]}"),
        ("x", scene.other, "kept: no rule selects this tag"),
    ]:
        block = f"  = {tags}  {image.digest}\n"
        assert block in text, tags
        after = text[text.index(block) + len(block) :].splitlines()
        assert after[1] == f"      {reason}", tags


def test_from_inventory_gives_the_live_plan_without_contacting_the_registry(
    scene: Scene, registry: RegistryProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "inventory.json"
    inventory = ["inventory", "-p", str(scene.policy), *scene.select, "--format", "json"]
    assert main([*inventory, "-o", str(saved)]) == 0
    live, offline = tmp_path / "live.json", tmp_path / "offline.json"
    assert main(_plan(scene, "-q", "-o", str(live))) == 0
    assert main(_plan(scene, "-q", "-o", str(offline), "--from-inventory", str(saved))) == 0
    # the same bytes but for generated_at: when each inventory was taken (seconds apart)
    live_doc, offline_doc = json.loads(live.read_bytes()), json.loads(offline.read_bytes())
    assert live_doc.pop("generated_at") >= offline_doc.pop("generated_at")
    assert offline_doc == live_doc

    # the same policy pointed at a port where nothing listens: no request is even tried
    closed = write_policy(tmp_path / "closed.yaml", closed_port_url(), scene.prefix)
    mark = registry.log_mark()
    args = ["plan", "-p", str(closed), "--as-of", AS_OF_TEXT, "--format", "json"]
    assert main([*args, "--from-inventory", str(saved)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["registry"] == registry.url  # the inventory's registry
    assert _deletions(doc) == scene.deleted_at_as_of()
    assert registry.access_log(mark) == []

    # --repository narrows a saved inventory as it narrows a walk
    narrow = ["--from-inventory", str(saved), "--repository", f"{scene.prefix}/multi"]
    assert main([*args, *narrow]) == 0
    narrowed = json.loads(capsys.readouterr().out)
    assert set(_deletions(narrowed)) == {
        k for k in scene.deleted_at_as_of() if k[0] == f"{scene.prefix}/multi"
    }
    assert narrowed["summary"]["repositories"] == 1


def test_a_plan_file_given_as_the_inventory_is_named_in_the_error(
    scene: Scene, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.json"
    assert main(_plan(scene, "-q", "-o", str(plan_file))) == 0
    assert main(_plan(scene, "--from-inventory", str(plan_file))) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: {plan_file}: inventory file is malformed: $.taken_at: missing",
        "hint: save one with `retention inventory -p POLICY --format json -o FILE`",
    ]


@pytest.mark.parametrize("command", ["plan", "inventory"])
def test_a_bad_repository_regex_is_a_clear_error(
    scene: Scene, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code = main([command, "-p", str(scene.policy), "--repository", "apps/(["])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: --repository 'apps/([' is not a valid RE2 pattern: missing ]: [",
        "hint: it is matched against the whole repository name, e.g. 'apps/.*'",
    ]


def test_a_bad_as_of_is_exit_1_even_with_detailed_exitcode(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["plan", "-p", str(scene.policy), "--detailed-exitcode", "--as-of", "yesterday"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")  # 2 would read as "changes present"
    assert err.splitlines()[0] == "error: --as-of 'yesterday' is not a date"


def test_unreachable_registry_is_one_line_and_leaves_the_output_alone(
    scene: Scene, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = closed_port_url()
    policy = write_policy(tmp_path / "down.yaml", url, scene.prefix)
    out_file = tmp_path / "plan.json"
    out_file.write_text("the previous plan\n")
    assert main(["plan", "-p", str(policy), "-o", str(out_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "error: cannot list the registry's repositories: GET failed after 5 attempt(s): "
        f"connection error [{url}/v2/_catalog]",
        f"hint: is the registry running and reachable at {url}? `retention doctor -p POLICY` "
        "checks the connection, credentials and deletes",
    ]
    assert out_file.read_text() == "the previous plan\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == ["plan.json"]


def test_an_unset_variable_is_named_and_nothing_is_contacted(
    scene: Scene,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RT_E2E_UNSET_PASSWORD", raising=False)
    text = scene.policy.read_text().replace(
        "\nsettings:", "\n  auth: {username: ci, password: '${RT_E2E_UNSET_PASSWORD}'}\nsettings:"
    )
    policy = tmp_path / "secret.yaml"
    policy.write_text(text)
    out_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(out_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: {policy}:4:34: $.registry.auth.password: environment variable "
        "`RT_E2E_UNSET_PASSWORD` is not set (hint: set it before running plan, apply or schedule)"
    ]
    assert not out_file.exists()


def test_an_output_folder_that_does_not_exist_fails_before_the_walk(
    scene: Scene, registry: RegistryProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mark = registry.log_mark()
    target = tmp_path / "missing" / "plan.json"
    assert main(_plan(scene, "-o", str(target))) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: -o {target}: the folder {target.parent} does not exist",
        "hint: create it, or pick another",
    ]
    assert registry.access_log(mark) == []


@pytest.mark.parametrize(
    "argv",
    [["plan"], ["plan", "-p"], ["plan", "-p", "x.yaml", "--format", "yaml"], ["nosuchcommand"]],
    ids=["missing-policy", "flag-without-value", "bad-choice", "unknown-command"],
)
def test_usage_errors_exit_1_not_the_changes_code(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--detailed-exitcode"] if argv[0] == "plan" else argv) == 1
    assert "usage:" in capsys.readouterr().err


def test_an_unwritable_cache_is_a_warning_and_the_plan_is_the_same(
    scene: Scene,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*_plan(scene, "--format", "json", "--no-cache")]) == 0
    expected = json.loads(capsys.readouterr().out)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the cache folder cannot be created here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert main([*_plan(scene, "--format", "json")]) == 0
    out, err = capsys.readouterr()
    assert _deletions(json.loads(out)) == _deletions(expected)
    assert err.count("cannot write the digest cache") == 1
    assert "Traceback" not in err
