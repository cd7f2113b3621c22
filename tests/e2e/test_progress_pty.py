"""Progress as a person sees it: `python -m retention plan` with stderr on a real pseudo-terminal
(the `pty` module) against the session registry; and nothing of it on a pipe."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cliscene import AS_OF_TEXT, Scene

ROOT = Path(__file__).resolve().parents[2]
PHASE_LINE = re.compile(
    r"\r\x1b\[K(?P<phase>repositories|tags|images): (?P<done>\d+)/(?P<total>\d+) "
    r"\((?P<percent>\d+)%\), (?P<rate>[\d.]+k?/s|-/s), (?P<tail>ETA \S+|done in \S+)"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    return env | {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "NO_COLOR": "1",
    }


def _plan_args(scene: Scene) -> list[str]:
    return [
        sys.executable,
        "-m",
        "retention",
        "plan",
        "-p",
        str(scene.policy),
        "--as-of",
        AS_OF_TEXT,
        *scene.select,
    ]


def test_plan_on_a_terminal_shows_each_phase_with_rate_and_eta(
    scene: Scene, tmp_path: Path
) -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            _plan_args(scene),
            cwd=ROOT,
            env=_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        seen = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed its end of the terminal
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.returncode == 0
    assert stdout.decode().startswith("Plan for ")  # the plan itself still goes to stdout
    text = seen.decode().replace("\r\n", "\n")  # the terminal's line discipline adds the CRs
    draws = list(PHASE_LINE.finditer(text))
    assert draws, text
    finals = [m for m in draws if m["tail"].startswith("done in")]
    # one finished line per phase, in order, each ending its own line
    assert [m["phase"] for m in finals] == ["repositories", "tags", "images"]
    for m in finals:
        assert m["done"] == m["total"] and m["percent"] == "100"
        assert text[m.end()] == "\n"
    assert int(finals[0]["total"]) == 3  # the scene's three repositories


def test_plan_on_a_pipe_shows_no_progress_and_json_logs_get_events(
    scene: Scene, tmp_path: Path
) -> None:
    quiet = subprocess.run(
        _plan_args(scene), cwd=ROOT, env=_env(tmp_path), capture_output=True, timeout=120
    )
    assert (quiet.returncode, quiet.stderr) == (0, b"")
    events = subprocess.run(
        [*_plan_args(scene), "--log-format", "json"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert events.returncode == 0
    docs = [json.loads(line) for line in events.stderr.splitlines()]
    progress = [d for d in docs if d.get("event") == "progress"]
    assert [d["phase"] for d in progress if d["final"]] == ["repositories", "tags", "images"]
    assert all(d["logger"] == "retention.progress" and d["level"] == "info" for d in progress)
    silenced = subprocess.run(
        [*_plan_args(scene), "--log-format", "json", "--quiet"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        timeout=120,
    )
    assert (silenced.returncode, silenced.stderr) == (0, b"")
