"""The gc step's subprocess handling: exit codes, captured output, timeouts, storage measurement.

Real child processes (a Python script stands in for `registry garbage-collect`); the collector
itself against a real registry is in test_gc_registry.py.
"""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

from retention.gc import OUTPUT_LIMIT, run_gc, storage_bytes


def script(code: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code, *args)


def test_success_captures_output_and_measures_the_bytes_freed(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    (storage / "blobs" / "ab").mkdir(parents=True)
    (storage / "blobs" / "ab" / "data").write_bytes(b"x" * 4096)
    (storage / "keep").write_bytes(b"y" * 100)
    (storage / "link").symlink_to(storage / "keep")  # not counted twice
    command = script(
        "import os, sys; os.remove(sys.argv[1]); print('1 blobs eligible for deletion');"
        "print('to stderr', file=sys.stderr)",
        str(storage / "blobs" / "ab" / "data"),
    )
    result = run_gc(command, storage_path=str(storage))
    assert result.ok and result.exit_code == 0
    assert "1 blobs eligible for deletion" in result.output and "to stderr" in result.output
    assert (result.bytes_before, result.bytes_after, result.bytes_freed) == (4196, 100, 4096)


def test_non_zero_exit_is_a_failure_with_its_output(tmp_path: Path) -> None:
    result = run_gc(script("import sys; print('failed to mark: boom'); sys.exit(3)"))
    assert not result.ok and result.exit_code == 3
    assert "failed to mark: boom" in result.output and result.error is None


def test_a_command_that_cannot_start_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    result = run_gc((str(tmp_path / "no-such-registry"), "garbage-collect"))
    assert not result.ok and result.exit_code is None
    assert result.error is not None and "cannot run" in result.error


def test_a_missing_storage_path_stops_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = script(f"open({str(marker)!r}, 'w').close()")
    result = run_gc(command, storage_path=str(tmp_path / "missing"))
    assert not result.ok and not marker.exists()
    assert result.error is not None and "is not a directory" in result.error


def test_no_shell_is_involved(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = run_gc(script("import sys; print(sys.argv[1])", f"; touch {marker}"))
    assert result.ok and f"; touch {marker}" in result.output and not marker.exists()


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # A wrapper that starts a long child sharing its stdout: killing only the wrapper would
    # leave the pipe open and hang the step forever.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print('grandchild', child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    result = run_gc(script(code), timeout=1)
    assert not result.ok and result.exit_code is None
    assert result.error == "timed out after 1 s and was killed"
    pid = int(result.output.split()[1])
    # The grandchild got the group's SIGKILL: it has exited (or is exiting: the pipe closes
    # before the process is done). A pidfd becomes readable when the process has terminated.
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already reaped
    try:
        ready, _, _ = select.select([pidfd], [], [], 60)
        assert ready, f"grandchild {pid} survived the timeout"
    finally:
        os.close(pidfd)


def test_long_output_keeps_the_tail(tmp_path: Path) -> None:
    result = run_gc(script("print('a' * 100000 + 'THE END')"))
    assert result.ok
    assert result.output.endswith("THE END\n")
    assert result.output.startswith("[... ")
    assert len(result.output) < OUTPUT_LIMIT + 100


def test_storage_bytes_counts_regular_files(tmp_path: Path) -> None:
    assert storage_bytes(str(tmp_path)) == 0
    (tmp_path / "f").write_bytes(b"abc")
    assert storage_bytes(str(tmp_path)) == 3
