"""The gc step against the real registry: `docker-registry garbage-collect` run by `run_gc`,
the bytes freed measured by the storage walk, the kept image intact after the restart."""

from __future__ import annotations

from retention.gc import run_gc, storage_bytes
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher


def test_gc_after_a_delete_frees_the_deleted_images_blobs_and_keeps_the_rest(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher
) -> None:
    kept = fresh_pusher.push_image("apps/web", "v2", layers=2, layer_size=4096)
    gone = fresh_pusher.push_image("apps/web", "v1", layers=2, layer_size=8192)
    assert fresh_pusher.delete_manifest("apps/web", gone.digest) == 202
    only_gone = sum(size for digest, size in gone.blob_sizes if digest not in kept.digests())

    fresh_registry.stop()  # stop-the-world, as docs/scheduling.md prescribes
    storage = str(fresh_registry.storage_dir)
    before = storage_bytes(storage)
    result = run_gc(
        (fresh_registry.binary, "garbage-collect", str(fresh_registry.config_path)),
        storage_path=storage,
        timeout=300,
    )
    fresh_registry.start()  # the restart also empties the blob-descriptor cache

    assert result.ok, result.output
    assert result.exit_code == 0
    assert result.bytes_before == before
    assert result.bytes_freed is not None and result.bytes_freed >= only_gone
    assert "eligible for deletion" in result.output
    assert fresh_pusher.pull_complete("apps/web", "v2")
    for digest, _ in gone.blob_sizes:
        if digest not in kept.digests():
            assert not fresh_pusher.blob_exists("apps/web", digest)


def test_gc_with_a_bad_config_is_a_failed_step_with_the_collectors_words(
    fresh_registry: RegistryProcess,
) -> None:
    result = run_gc((fresh_registry.binary, "garbage-collect", "/nonexistent/config.yml"))
    assert not result.ok and result.exit_code == 1
    assert "no such file or directory" in result.output
