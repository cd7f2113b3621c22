"""`retention inventory` through `main(argv)` on the session registry: the text report (per
repository totals sorted by size, then per tag digest, created and size), JSON that loads back
into an `Inventory`, CSV with one row per tag, and `-o`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from retention.cli import main
from retention.model import Inventory
from retention.plan import human_bytes
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed
from tests.support.cliscene import Scene


def _inventory(scene: Scene, *extra: str) -> list[str]:
    return ["inventory", "-p", str(scene.policy), *scene.select, *extra]


def _tags(scene: Scene) -> dict[tuple[str, str], Pushed]:
    """(repository, tag) -> the image it points at, for every tag of the scene."""
    images = [
        scene.main1,
        scene.main2,
        scene.main3,
        scene.main4,
        scene.epoch,
        scene.sig1,
        scene.sig3,
        scene.index,
        scene.other,
    ]
    return {(p.repo, t): p for p in images for t in p.tags}


def _size(*images: Pushed) -> int:
    blobs: dict[str, int] = {}
    for image in images:
        blobs.update(image.blob_sizes)
    return sum(blobs.values())


def _created(image: Pushed) -> str:
    """What the report shows as created: an index the newest of its platforms; cosign's
    0001-01-01 and the 1970 epoch are no dates (DESIGN §2)."""
    if image.children:
        return max(_created(c) for c in image.children)
    if image.created is None or image.created.startswith(("0001-", "1970-")):
        return "unknown"
    return image.created


def test_text_has_totals_by_size_then_every_tag_in_aligned_columns(
    scene: Scene, registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_inventory(scene)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"Registry {registry.url}, taken ")
    s, p = scene, scene.prefix
    web_size = _size(s.main1, s.main2, s.main3, s.main4, s.epoch, s.sig1, s.sig3)
    # by size, largest first: web (7 images), multi (an index and 2 platform manifests), other
    width = len(f"{p}/multi")
    assert lines[2:6] == [
        f"{'REPOSITORY':<{width}}    TAGS  IMAGES        SIZE",
        f"{p + '/web':<{width}}       8       7  {human_bytes(web_size):>10}",
        f"{p + '/multi':<{width}}       1       3  {human_bytes(s.index.size):>10}",
        f"{p + '/other':<{width}}       1       1  {human_bytes(s.other.size):>10}",
    ]
    assert web_size > s.index.size > s.other.size

    tags = _tags(scene)
    blocks = out.split("\n\n")[2:]
    assert [b.splitlines()[0] for b in blocks] == [f"{p}/web:", f"{p}/multi:", f"{p}/other:"]
    for block in blocks:
        repo = block.splitlines()[0].removesuffix(":")
        header, *rows = block.splitlines()[1:]
        digest_column = header.index("DIGEST")
        assert header.split() == ["TAG", "DIGEST", "CREATED", "SIZE"]
        assert len(rows) == sum(1 for r, _ in tags if r == repo)
        for row in rows:
            tag, digest, created, size = row.split(maxsplit=3)
            image = tags[repo, tag]
            assert row.index(digest) == digest_column, row  # aligned, even after a cosign tag
            assert image.digest.startswith(digest)
            assert created == _created(image), row
            assert size == human_bytes(image.size)
    web_rows = {row.split()[0]: row for row in blocks[0].splitlines()[2:]}
    assert web_rows["epoch"].split()[2] == "unknown"  # 1970-01-01 is no date (DESIGN §2)
    assert web_rows["main-3"].split()[2] == "2026-04-12T12:00:00Z"
    assert web_rows[scene.sig1.tag].split()[2] == "unknown"  # cosign's 0001-01-01


def test_json_loads_back_into_an_inventory(
    scene: Scene, registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_inventory(scene, "--format", "json")) == 0
    inventory = Inventory.from_document(json.loads(capsys.readouterr().out))
    assert inventory.registry == registry.url
    assert inventory.complete is False  # narrowed by --repository
    found = {(r.name, t.name): t.digest for r in inventory.repositories for t in r.tags}
    assert found == {key: image.digest for key, image in _tags(scene).items()}
    (web,) = [r for r in inventory.repositories if r.name == scene.web]
    epoch = web.image(scene.epoch.digest)
    assert epoch is not None
    assert (epoch.created, epoch.created_raw) == (None, "1970-01-01T00:00:00Z")
    (multi,) = [r for r in inventory.repositories if r.name == f"{scene.prefix}/multi"]
    assert {i.digest for i in multi.images} == {
        scene.index.digest,
        *(c.digest for c in scene.index.children),
    }


def test_csv_has_one_row_per_tag(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_inventory(scene, "--format", "csv")) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["repository", "tag", "digest", "media_type", "kind", "created", "size"]
    tags = _tags(scene)
    assert {(r["repository"], r["tag"]) for r in rows} == set(tags)
    for row in rows:
        image = tags[row["repository"], row["tag"]]
        assert row["digest"] == image.digest
        assert row["media_type"] == image.media_type
        assert int(row["size"]) == image.size
    by_tag = {r["tag"]: r for r in rows}
    assert by_tag["main-3"]["created"] == "2026-04-12T12:00:00Z"
    assert by_tag["epoch"]["created"] == ""
    assert (by_tag["i"]["kind"], by_tag[scene.sig1.tag]["kind"]) == ("index", "artifact")


def test_output_file_gets_the_report_and_stdout_stays_empty(
    scene: Scene, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "inventory.csv"
    assert main(_inventory(scene, "--format", "csv", "-o", str(target))) == 0
    assert capsys.readouterr() == ("", "")
    assert target.read_text().startswith("repository,tag,digest,media_type,kind,created,size\n")
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("xdg-")] == [
        "inventory.csv"
    ]
