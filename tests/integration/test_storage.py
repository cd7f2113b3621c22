"""The storage inventory against a real registry's own storage directory (its rootdirectory):
the same `Image` values as the API walk for everything a tag reaches, every revision besides
(untagged ones, with push times and tag history), and a clear error for every bad storage."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.inventory import take_inventory
from retention.model import Inventory, Kind, Repository
from retention.policy.model import RegistryConfig
from retention.registry.client import RegistryClient
from retention.storage import (
    IN_FLIGHT_SECONDS,
    StorageError,
    compare_with_api,
    take_storage_inventory,
    with_in_flight,
)
from retention.storage import read as storage_read
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, make_layer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
V2 = Path("docker", "registry", "v2")


def _api(registry: RegistryProcess, prefix: str) -> Inventory:
    with RegistryClient(RegistryConfig(url=registry.url), env={}) as client:
        return take_inventory(
            client, now=NOW, select=lambda n: n.startswith(prefix + "/"), complete=False
        )


def _storage(
    root: Path | str,
    prefix: str = "",
    url: str = "http://127.0.0.1:1",
    processes: int | None = None,
) -> Inventory:
    return take_storage_inventory(
        str(root),
        registry=url,
        now=NOW,
        select=lambda n: n.startswith(prefix + "/") if prefix else True,
        complete=not prefix,
        processes=processes,
    )


def _repo(inventory: Inventory, name: str) -> Repository:
    (repo,) = [r for r in inventory.repositories if r.name == name]
    return repo


def _scene(pusher: Pusher, prefix: str) -> dict[str, Pushed]:
    repo = f"{prefix}/app"
    shared = make_layer("shared " * 50)
    out = {
        "latest1": pusher.push_image(repo, "latest", created=NOW - timedelta(days=9)),
        "latest2": pusher.push_image(repo, "latest", created=NOW - timedelta(days=5)),
        "latest3": pusher.push_image(repo, "latest", created=NOW - timedelta(days=1)),
        "docker": pusher.push_image(repo, ["a", "b"], layers=[shared, "x"]),
        "oci": pusher.push_image(repo, "oci", kind="oci", layers=[shared]),
        "index": pusher.push_image(repo, "multi", kind="oci-index"),
        "dlist": pusher.push_image(repo, "dlist", kind="docker-list"),
        "nodate": pusher.push_image(repo, "nodate", created=None),
        "bydigest": pusher.push_image(repo, None, kind="oci"),
        "untagged_index": pusher.push_image(repo, None, kind="oci-index"),
    }
    out["sig"] = pusher.push_cosign_signature(repo, out["docker"])
    out["referrer"] = pusher.push_referrer(repo, out["oci"])
    pusher.push_image(f"{prefix}/nested/deeper/repo", "v1")
    return out


@pytest.fixture
def seeded(fresh_registry: RegistryProcess, fresh_pusher: Pusher) -> dict[str, Pushed]:
    return _scene(fresh_pusher, "s")


def _without_push_time(repo: Repository) -> dict[str, object]:
    return {i.digest: dataclasses.replace(i, pushed_at=None) for i in repo.images}


def test_the_storage_inventory_is_the_api_inventory_plus_every_untagged_revision(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    api = _api(fresh_registry, "s")
    disk = _storage(fresh_registry.storage_dir)
    assert disk.source == "storage"
    assert [r.name for r in disk.repositories] == ["s/app", "s/nested/deeper/repo"]
    for api_repo in api.repositories:
        disk_repo = _repo(disk, api_repo.name)
        assert disk_repo.tags == api_repo.tags
        on_disk = _without_push_time(disk_repo)
        for image in api_repo.images:
            assert on_disk[image.digest] == image, image.digest  # the same values, field by field
    app = _repo(disk, "s/app")
    api_digests = {i.digest for i in _repo(api, "s/app").images}
    extra = {i.digest for i in app.images} - api_digests
    untagged = {seeded["latest1"].digest, seeded["latest2"].digest, seeded["bydigest"].digest}
    untagged |= {seeded["untagged_index"].digest} | {
        c.digest for c in seeded["untagged_index"].children
    }
    referrer = seeded["referrer"].digest
    assert extra == untagged | {referrer}
    # an untagged index's children carry their platform, as a tagged index's do
    child = app.image(seeded["untagged_index"].children[0].digest)
    assert child is not None and child.platform == seeded["untagged_index"].children[0].platform
    assert app.image(seeded["untagged_index"].digest).kind is Kind.INDEX  # type: ignore[union-attr]


def test_push_times_and_tag_history_come_from_the_link_files(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    disk = _storage(fresh_registry.storage_dir)
    app = _repo(disk, "s/app")
    started = datetime.now(UTC) - timedelta(minutes=10)
    assert all(i.pushed_at is not None and i.pushed_at > started for i in app.images)
    latest = [e for e in app.history if e.tag == "latest"]
    assert [e.digest for e in latest] == [
        seeded[k].digest for k in ("latest1", "latest2", "latest3")
    ]
    assert latest[0].at <= latest[1].at <= latest[2].at
    pushed = {i.digest: i.pushed_at for i in app.images}
    assert pushed[seeded["latest1"].digest] <= pushed[seeded["latest3"].digest]  # type: ignore[operator]
    # a saved inventory keeps the new fields, to the microsecond (`created` is saved to the
    # second, as before)
    again = Inventory.from_document(disk.to_document())
    assert again.source == "storage"
    for a, b in zip(again.repositories, disk.repositories, strict=True):
        assert a.history == b.history
        assert [i.pushed_at for i in a.images] == [i.pushed_at for i in b.images]


def test_blob_sizes_are_what_the_disk_holds(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    app = _repo(_storage(fresh_registry.storage_dir), "s/app")
    for key in ("docker", "oci", "latest1"):
        image = app.image(seeded[key].digest)
        assert image is not None
        sizes = dict(seeded[key].blob_sizes)
        assert {b.digest: b.size for b in image.blobs} == {
            d: s for d, s in sizes.items() if d != seeded[key].digest
        }
        for blob in image.blobs:
            hexpart = blob.digest.split(":")[1]
            data = fresh_registry.storage_dir / V2 / "blobs/sha256" / hexpart[:2] / hexpart / "data"
            assert data.stat().st_size == blob.size


def test_the_reader_writes_nothing(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    def snapshot() -> dict[str, tuple[int, int, int]]:
        out = {}
        for folder, dirs, files in os.walk(fresh_registry.storage_dir):
            for name in dirs + files:
                st = os.lstat(os.path.join(folder, name))
                out[os.path.join(folder, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return out

    before = snapshot()
    _storage(fresh_registry.storage_dir)
    assert snapshot() == before


def test_a_selection_reads_only_the_selected_repositories(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    disk = take_storage_inventory(
        str(fresh_registry.storage_dir),
        registry=fresh_registry.url,
        now=NOW,
        select=lambda n: n == "s/nested/deeper/repo",
        complete=False,
    )
    assert [r.name for r in disk.repositories] == ["s/nested/deeper/repo"]
    assert not disk.complete


# --- same registry? -----------------------------------------------------------------------------


def test_storage_and_api_of_the_same_registry_agree(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    disk = _storage(fresh_registry.storage_dir, url=fresh_registry.url)
    with RegistryClient(RegistryConfig(url=fresh_registry.url), env={}) as client:
        assert compare_with_api(client, disk, str(fresh_registry.storage_dir)) == []


def test_another_registrys_storage_is_refused(
    fresh_registry: RegistryProcess,
    seeded: dict[str, Pushed],
    registry: RegistryProcess,
    pusher: Pusher,
) -> None:
    pusher.push_image("s/app", "only-in-the-session-registry")
    disk = _storage(fresh_registry.storage_dir, url=registry.url)
    with (
        RegistryClient(RegistryConfig(url=registry.url), env={}) as client,
        pytest.raises(StorageError, match="disagree") as caught,
    ):
        compare_with_api(client, disk, str(fresh_registry.storage_dir))
    assert "--inventory-source api" in caught.value.diagnostics()


def test_a_tag_pushed_while_the_storage_was_read_is_in_flight_and_kept_as_tagged(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed], fresh_pusher: Pusher
) -> None:
    disk = _storage(fresh_registry.storage_dir, url=fresh_registry.url)
    old = seeded["latest1"]
    fresh_pusher.tag("s/app", "pinned", old)  # an untagged revision gets a tag after the read
    with RegistryClient(RegistryConfig(url=fresh_registry.url), env={}) as client:
        seen = compare_with_api(client, disk, str(fresh_registry.storage_dir))
        assert [(d.tag, d.in_flight, d.digest) for d in seen] == [("pinned", True, old.digest)]
        fixed = with_in_flight(disk, seen)
        assert ("pinned", old.digest) in {(t.name, t.digest) for t in _repo(fixed, "s/app").tags}
        # the same tag written long ago is no push in flight: a different registry
        later = time.time() + IN_FLIGHT_SECONDS + 1
        with pytest.raises(StorageError, match="only in the API"):
            compare_with_api(client, disk, str(fresh_registry.storage_dir), clock=lambda: later)


# --- bad storage --------------------------------------------------------------------------------


@pytest.fixture
def copy(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed], tmp_path: Path
) -> Iterator[tuple[Path, dict[str, Pushed]]]:
    """A copy of the seeded registry's storage to damage (links copied as links)."""
    root = tmp_path / "copy"
    shutil.copytree(fresh_registry.storage_dir, root, symlinks=True)
    yield root, seeded


def _blob(root: Path, digest: str) -> Path:
    hexpart = digest.split(":")[1]
    return root / V2 / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"


def _app(root: Path) -> Path:
    return root / V2 / "repositories" / "s" / "app" / "_manifests"


Damage = Callable[[Path, dict[str, Pushed]], None]


def _junk_current_link(root: Path, seeded: dict[str, Pushed]) -> None:
    (_app(root) / "tags" / "latest" / "current" / "link").write_bytes(b"sha256:12")


def _half_written_link(root: Path, seeded: dict[str, Pushed]) -> None:
    (_app(root) / "tags" / "a" / "current" / "link").write_bytes(b"")


def _revision_names_another_digest(root: Path, seeded: dict[str, Pushed]) -> None:
    hexpart = seeded["oci"].digest.split(":")[1]
    link = _app(root) / "revisions" / "sha256" / hexpart / "link"
    link.write_text(seeded["docker"].digest)


def _manifest_bytes_changed(root: Path, seeded: dict[str, Pushed]) -> None:
    data = _blob(root, seeded["docker"].digest)
    data.write_bytes(data.read_bytes().replace(b"{", b"{ ", 1))


def _truncated_manifest(root: Path, seeded: dict[str, Pushed]) -> None:
    raw = seeded["docker"].manifest[: len(seeded["docker"].manifest) // 2]
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    data = _blob(root, digest)
    data.parent.mkdir(parents=True)
    data.write_bytes(raw)
    link = _app(root) / "revisions" / "sha256" / digest.split(":")[1] / "link"
    link.parent.mkdir(parents=True)
    link.write_text(digest)


def _blob_is_a_link_out_of_the_root(root: Path, seeded: dict[str, Pushed]) -> None:
    data = _blob(root, seeded["docker"].digest)
    outside = root.parent / "outside-manifest"
    outside.write_bytes(data.read_bytes())
    data.unlink()
    data.symlink_to(outside)


def _layer_is_a_link_out_of_the_root(root: Path, seeded: dict[str, Pushed]) -> None:
    data = _blob(root, seeded["docker"].layer_digests[-1])
    data.unlink()
    data.symlink_to("/etc/hostname")


def _repository_is_a_link_out_of_the_root(root: Path, seeded: dict[str, Pushed]) -> None:
    outside = root.parent / "outside-repo"
    shutil.copytree(root / V2 / "repositories" / "s" / "nested", outside, symlinks=True)
    shutil.rmtree(root / V2 / "repositories" / "s" / "nested")
    (root / V2 / "repositories" / "s" / "nested").symlink_to(outside)


def _link_file_is_a_link(root: Path, seeded: dict[str, Pushed]) -> None:
    link = _app(root) / "tags" / "oci" / "current" / "link"
    link.unlink()
    link.symlink_to("/etc/passwd")


def _blob_folder_is_a_link(root: Path, seeded: dict[str, Pushed]) -> None:
    folder = _blob(root, seeded["oci"].digest).parent
    outside = root.parent / "outside-folder"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside)


def _current_folder_is_a_link(root: Path, seeded: dict[str, Pushed]) -> None:
    current = _app(root) / "tags" / "oci" / "current"
    outside = root.parent / "outside-current"
    shutil.copytree(current, outside)
    shutil.rmtree(current)
    current.symlink_to(outside)


def _blob_store_is_a_link(root: Path, seeded: dict[str, Pushed]) -> None:
    blobs = root / V2 / "blobs"
    outside = root.parent / "outside-blobs"
    shutil.move(blobs, outside)
    blobs.symlink_to(outside)


def _tag_folder_with_a_bad_name(root: Path, seeded: dict[str, Pushed]) -> None:
    (_app(root) / "tags" / "-bad tag").mkdir()


def _file_where_a_folder_belongs(root: Path, seeded: dict[str, Pushed]) -> None:
    shutil.rmtree(_app(root) / "revisions")
    (_app(root) / "revisions").write_text("nope")


BAD: dict[str, tuple[Damage, str]] = {
    "junk-in-a-tag-link": (_junk_current_link, "does not hold a digest"),
    "empty-tag-link": (_half_written_link, "does not hold a digest"),
    "revision-link-names-another-digest": (_revision_names_another_digest, "the folder it is in"),
    "manifest-bytes-do-not-match-the-digest": (_manifest_bytes_changed, "do not hash to"),
    "truncated-manifest-json": (_truncated_manifest, "not valid JSON"),
    "manifest-blob-links-out-of-the-root": (_blob_is_a_link_out_of_the_root, "symbolic link"),
    "layer-blob-links-out-of-the-root": (_layer_is_a_link_out_of_the_root, "symbolic link"),
    "repository-links-out-of-the-root": (_repository_is_a_link_out_of_the_root, "symbolic link"),
    "link-file-is-a-link": (_link_file_is_a_link, "symbolic link"),
    "blob-folder-is-a-link": (_blob_folder_is_a_link, "symbolic link"),
    "current-folder-is-a-link": (_current_folder_is_a_link, "symbolic link"),
    "blob-store-is-a-link": (_blob_store_is_a_link, "symbolic link"),
    "tag-folder-with-an-invalid-name": (_tag_folder_with_a_bad_name, "not a valid tag"),
    "file-where-a-folder-belongs": (_file_where_a_folder_belongs, "a file where"),
}


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "worker-processes"])
@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_damaged_storage_is_a_clear_error(
    case: str, processes: int, copy: tuple[Path, dict[str, Pushed]]
) -> None:
    root, seeded = copy
    damage, expected = BAD[case]
    assert _storage(root).repositories  # the copy reads cleanly before the damage
    damage(root, seeded)
    with pytest.raises(StorageError) as caught:
        _storage(root, processes=processes)
    text = caught.value.diagnostics()
    assert expected in text
    assert "hint:" in text


def test_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist") as caught:
        _storage(tmp_path / "nowhere")
    assert "rootdirectory" in caught.value.diagnostics()


def test_a_folder_that_is_not_a_registry_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a registry's storage root"):
        _storage(tmp_path)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StorageError, match="not a folder"):
        _storage(tmp_path / "a-file")


def test_the_v2_folder_itself_gets_a_hint(copy: tuple[Path, dict[str, Pushed]]) -> None:
    root, _ = copy
    with pytest.raises(StorageError, match="three levels up"):
        _storage(root / V2)


def test_the_configured_root_may_itself_be_a_link(
    copy: tuple[Path, dict[str, Pushed]], tmp_path: Path
) -> None:
    root, _ = copy
    (tmp_path / "var-lib-registry").symlink_to(root)
    assert _storage(tmp_path / "var-lib-registry") == _storage(root)


def test_an_unreadable_storage_is_a_clear_error(copy: tuple[Path, dict[str, Pushed]]) -> None:
    root, _ = copy
    if os.geteuid() == 0:
        # root reads every file whatever its mode: an unreadable folder is made of a folder
        # the reader cannot list at all, a FIFO where a link file belongs (not a regular file)
        fifo = _app(root) / "tags" / "a" / "current" / "link"
        fifo.unlink()
        os.mkfifo(fifo)
        with pytest.raises(StorageError, match="not a regular file"):
            _storage(root)
        return
    (root / V2 / "repositories").chmod(0)
    try:
        with pytest.raises(StorageError, match="permission denied"):
            _storage(root)
    finally:
        (root / V2 / "repositories").chmod(0o755)


# --- worker processes (docs/decisions.md, "Storage inventory: speed") ----------------------------


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("this path must not run")


def _in_a_fresh_interpreter(script: str) -> None:
    """Run `script` in a new Python. The read forks its workers only where no other thread runs
    (docs/decisions.md, "Storage inventory: speed"), and this test process holds the threads of
    earlier tests (watchdogs, servers): here the read would stay in-process and, for the test of
    a dying worker, end the test run itself."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


_READ = (
    "from datetime import datetime\n"
    "from retention.storage import read\n"
    "def refuse(*args, **kwargs):\n"
    "    raise AssertionError('this path must not run')\n"
    "def take(processes):\n"
    "    return read.take_storage_inventory(\n"
    "        {root!r}, registry='http://127.0.0.1:1', now=datetime.fromisoformat({now!r}),\n"
    "        processes=processes)\n"
)


def test_worker_processes_read_what_one_process_reads(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    layer = seeded["oci"].layer_digests[0]
    script = _READ.format(root=str(fresh_registry.storage_dir), now=NOW.isoformat()) + (
        "in_workers = read._in_workers\n"
        "read._in_workers = refuse\n"
        "alone = take(1)\n"
        "read._in_workers, read._in_process = in_workers, refuse\n"
        "shared = take(2)\n"
        "names = [r.name for r in shared.repositories]\n"
        "assert names == ['s/app', 's/nested/deeper/repo'], names\n"
        "assert shared == alone and shared.warnings == alone.warnings\n"
        "# one Blob value per blob, however many images list it (the shared base layer)\n"
        "(app,) = [r for r in shared.repositories if r.name == 's/app']\n"
        f"holders = [b for i in app.images for b in i.blobs if b.digest == {layer!r}]\n"
        "assert len(holders) >= 2 and all(b is holders[0] for b in holders), holders\n"
    )
    _in_a_fresh_interpreter(script)


def test_with_other_threads_running_the_storage_is_read_in_this_process(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed], monkeypatch: pytest.MonkeyPatch
) -> None:
    # forking while another thread may hold a lock can deadlock the child
    monkeypatch.setattr(storage_read, "_in_workers", _refuse)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        disk = _storage(fresh_registry.storage_dir, processes=2)
    finally:
        release.set()
        other.join()
    assert [r.name for r in disk.repositories] == ["s/app", "s/nested/deeper/repo"]


def test_a_worker_process_that_dies_is_a_clear_error(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    script = _READ.format(root=str(fresh_registry.storage_dir), now=NOW.isoformat()) + (
        "import os\n"
        "from retention.storage import StorageError\n"
        "read._in_process = refuse\n"
        "# as the kernel's out-of-memory killer would end it; the forked workers inherit this\n"
        "read.read_repository = lambda *args: os._exit(9)\n"
        "try:\n"
        "    take(2)\n"
        "except StorageError as exc:\n"
        "    text = exc.diagnostics()\n"
        "    assert 'ended unexpectedly' in text and 'hint:' in text, text\n"
        "else:\n"
        "    raise AssertionError('no StorageError')\n"
    )
    _in_a_fresh_interpreter(script)


def test_threads_are_counted_by_the_system_and_without_proc_by_threading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert storage_read._threads() >= 2  # /proc/self/task: this thread and the other

        def no_proc(path: str) -> list[str]:
            raise FileNotFoundError(path)

        monkeypatch.setattr(storage_read.os, "listdir", no_proc)
        assert storage_read._threads() == threading.active_count() >= 2
    finally:
        release.set()
        other.join()


def test_usable_cpus_without_affinity_are_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage_read._cpus() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(storage_read.os, "sched_getaffinity")  # as on macOS
    assert storage_read._cpus() == (os.cpu_count() or 1)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # ended meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has ended


def test_workers_end_when_their_parent_is_killed(
    fresh_registry: RegistryProcess, seeded: dict[str, Pushed]
) -> None:
    # a parent killed mid-read (SIGKILL, the out-of-memory killer) must not leave its workers
    # blocked forever on pipes the other workers hold open
    script = (
        "import time\n"
        "from datetime import UTC, datetime\n"
        "from retention.storage import read\n"
        "read.read_repository = lambda *args: time.sleep(120)\n"
        f"read.take_storage_inventory({str(fresh_registry.storage_dir)!r}, "
        "registry='http://127.0.0.1:1', now=datetime.now(UTC), processes=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 30
        workers = _children(parent.pid)
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = _children(parent.pid)
        assert len(workers) == 2, "the two worker processes did not start"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _running(w)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # stop what the test started, then fail
    assert not left, f"worker processes {left} outlived their parent"
