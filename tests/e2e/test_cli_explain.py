"""`retention explain` through `main(argv)` on the session registry: for each tag the owning
rule, its rank, its age and the decisive reason, one test per kind of reason, written by hand
from the scene's policy (tests/support/cliscene.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.registry import RegistryProcess
from tests.support.cliscene import AS_OF_TEXT, LATER_TEXT, Scene, closed_port_url, write_policy


def _short(digest: str) -> str:
    return digest[:19]


def _run(
    capsys: pytest.CaptureFixture[str], scene: Scene, target: str, *extra: str
) -> tuple[int, str, str]:
    code = main(["explain", "-p", str(scene.policy), target, "--as-of", AS_OF_TEXT, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _explained(capsys: pytest.CaptureFixture[str], scene: Scene, target: str) -> list[str]:
    """The lines `explain TARGET` prints, once it has exited 0."""
    code, out, _ = _run(capsys, scene, target)
    assert code == 0
    return out.splitlines()


def test_every_tag_of_a_repository_with_rule_rank_age_and_reason(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, scene, scene.web)
    assert (code, err) == (0, "")
    web, s = scene.web, scene
    sig1_tag, sig3_tag = s.sig1.tag, s.sig3.tag
    blocks = {
        "epoch": (
            f"{web}:epoch  {_short(s.epoch.digest)}  age unknown  (rule web)",
            "    kept: age unknown (created 1970-01-01T00:00:00Z)",
        ),
        "latest": (
            f"{web}:latest  {_short(s.main2.digest)}  20 days  (no rule)",
            "    kept: protected by pattern `latest`",
        ),
        "main-1": (
            f"{web}:main-1  {_short(s.main1.digest)}  1 day  (rule web, rank 1)",
            "    kept: the most recent (rank 1)",
        ),
        "main-2": (
            f"{web}:main-2  {_short(s.main2.digest)}  20 days  (rule web, rank 3)",
            "    kept: shares digest with `latest` (protected)",
        ),
        "main-3": (
            f"{web}:main-3  {_short(s.main3.digest)}  50 days  (rule web, rank 4)",
            "    deleted: rank 4 > 1 and 50 days old >= 7d",
        ),
        "main-4": (
            f"{web}:main-4  {_short(s.main4.digest)}  2 days  (rule web, rank 2)",
            "    kept: younger than 7d (2 days old)",
        ),
        sig1_tag: (
            f"{web}:{sig1_tag}  {_short(s.sig1.digest)}  age unknown  (no rule)",
            f"    kept: signature of kept image {s.main1.digest[:19]}",
        ),
        sig3_tag: (
            f"{web}:{sig3_tag}  {_short(s.sig3.digest)}  age unknown  (no rule)",
            f"    deleted: signature of deleted image {s.main3.digest[:19]}",
        ),
    }
    expected = [line for tag in sorted(blocks) for line in blocks[tag]]
    assert out.splitlines() == expected


def test_a_tag_no_rule_selects(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    assert _explained(capsys, scene, f"{scene.prefix}/other:x") == [
        f"{scene.prefix}/other:x  {_short(scene.other.digest)}  50 days  (no rule)",
        "    kept: no rule selects this tag",
    ]


def test_repo_colon_tag_explains_that_tag_alone(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _explained(capsys, scene, f"{scene.web}:main-3") == [
        f"{scene.web}:main-3  {_short(scene.main3.digest)}  50 days  (rule web, rank 4)",
        "    deleted: rank 4 > 1 and 50 days old >= 7d",
    ]


def test_as_of_ten_days_later_main_4_is_past_newer_than(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", "-p", str(scene.policy), f"{scene.web}:main-4", "--as-of", LATER_TEXT])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{scene.web}:main-4  {_short(scene.main4.digest)}  12 days  (rule web, rank 2)",
        "    deleted: rank 2 > 1 and 12 days old >= 7d",
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{prefix}/web:nope", "error: tag 'nope' is not in repository '{prefix}/web'"),
        ("{prefix}/absent", "error: repository '{prefix}/absent' is not in the inventory of"),
        (
            "{prefix}/web@sha256:" + "0" * 64,
            "error: manifest sha256:" + "0" * 64 + " is not in repository '{prefix}/web'",
        ),
        ("{prefix}/web@sha256:abc", "error: 'sha256:abc': not a digest"),
    ],
    ids=["unknown-tag", "unknown-repository", "unknown-digest", "malformed-digest"],
)
def test_an_unknown_name_is_an_error_not_a_traceback(
    scene: Scene, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    code, out, err = _run(capsys, scene, target.format(prefix=scene.prefix))
    assert (code, out) == (1, "")
    assert err.startswith(message.format(prefix=scene.prefix))
    assert "Traceback" not in err


def test_a_reference_pasted_with_the_registry_host_works(
    scene: Scene, registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _explained(capsys, scene, f"{registry.host}/{scene.web}:main-3")[0] == (
        f"{scene.web}:main-3  {_short(scene.main3.digest)}  50 days  (rule web, rank 4)"
    )
    lines = _explained(capsys, scene, f"{registry.host}/{scene.prefix}/other")
    assert lines[1] == "    kept: no rule selects this tag"


def test_explain_from_a_saved_inventory_needs_no_registry(
    scene: Scene, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "inventory.json"
    assert main(["inventory", "-p", str(scene.policy), *scene.select, "--format", "json",
                 "-o", str(saved)]) == 0  # fmt: skip
    code, live, _ = _run(capsys, scene, scene.web)
    assert code == 0
    offline = write_policy(tmp_path / "offline.yaml", closed_port_url(), scene.prefix)
    code = main(["explain", "-p", str(offline), scene.web, "--as-of", AS_OF_TEXT,
                 "--from-inventory", str(saved)])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out == live
