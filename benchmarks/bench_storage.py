"""Benchmark the storage inventory: `retention plan` read from the registry's storage, side by side
with the minimal HTTP client and the API plan, on the same seeded registry in one run.

10,000 tags (200 repositories x 50, benchmarks/scenario.py written into Debian's
`docker-registry` 2.8 storage, then served by it): the minimal client (benchmarks/
minimal_client.py), `retention plan --inventory-source api` (empty digest cache), then
`retention plan` from the storage with a cold page cache (`sync; echo 3 >
/proc/sys/vm/drop_caches`, needs root; without root an unmeasured first run instead), then warm.
The storage plan must equal the API plan byte for byte but for `inventory_source`. With
`--big N` it also seeds N repositories (N x 50 tags) and measures the storage plan there.
Each command runs once; wall time and peak RSS come from wait4 (bench_plan.measure).

Usage (from the repository root, in the project's virtualenv):
    python benchmarks/bench_storage.py [--repositories 200] [--big 2000] [--json out.json]
    python benchmarks/bench_storage.py --repositories 0 --big 2000   # the 100,000 tags only
Every figure is printed to stderr (one JSON line, with the load average) as soon as it exists,
and the report so far is rewritten to --json after each phase. Loopback only; the work folder
(under --work-dir, /tmp by default: the same disk as the rest) is removed at the end, timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scenario  # noqa: E402
from benchmarks.bench_plan import PLAN_RULES, Run, measure  # noqa: E402
from tests.harness.registry import RegistryProcess  # noqa: E402

TARGET_WARM_RATIO = 0.1  # storage plan (warm) / minimal client
TARGET_BIG_SECONDS = 30.0
TARGET_BIG_RSS_MB = 500.0


def write_policy(path: Path, url: str, storage: Path) -> None:
    path.write_text(
        "version: 1\n"
        f"registry:\n  url: {url}\n  storage:\n    filesystem: {storage}\n"
        "settings:\n  concurrency: 8\n  max_deletions: '100%'\n"
        "protect:\n  tags: ['latest', 'v\\d+\\.\\d+\\.\\d+']\n"
        f"rules:\n{PLAN_RULES}"
    )


def drop_caches() -> bool:
    """Empty the page cache (root only); False when not allowed."""
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return True


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def say(event: str, **fields: Any) -> None:
    """One JSON line on stderr, at once: a run killed later keeps what it printed."""
    line = {"at": time.strftime("%H:%M:%S"), "event": event, "load": load(), **fields}
    print(json.dumps(line, sort_keys=True), file=sys.stderr, flush=True)


def figures(run: Run) -> dict[str, Any]:
    return {
        "seconds": round(run.seconds, 3),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "max_rss_mb": round(run.max_rss_mb, 1),
        "requests": run.total,
        "statuses": run.statuses,
    }


def timed(
    runs: dict[str, Run],
    key: str,
    name: str,
    command: list[str],
    registry: RegistryProcess,
    env: dict[str, str],
    tag: str,
) -> Run:
    before = load()
    run = measure(name, command, registry, env=env)
    runs[key] = run
    say(f"{tag} {key}", load_before=before, **figures(run))
    return run


def without_source(text: str) -> str:
    """The plan without `inventory_source`, and without `generated_at`: the wall clock when each
    inventory was taken (the policy is evaluated at the same `--as-of` in both)."""
    doc = json.loads(text)
    doc.pop("inventory_source", None)
    doc.pop("generated_at", None)
    return json.dumps(doc, sort_keys=True)


def mount_image(work: Path, repositories: int) -> Path:
    """A fresh ext4 filesystem in a sparse image file in `work` (the same disk), loop-mounted:
    removing it afterwards is one umount and one unlink, not millions of unlinks. About 1,060
    files and folders per 50-tag repository, each a 4 KiB block; no journal (it only slows the
    seeding and the removal; reads are the same). Root only (so is dropping the page cache)."""
    image = work / f"registry-{repositories}.img"
    mountpoint = work / f"registry-{repositories}"
    mountpoint.mkdir()
    with image.open("wb") as f:
        f.truncate((1 + repositories * 10 // 1000) * 2**30 + repositories * 6 * 2**20)
    inodes = 50_000 + repositories * 1_500
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-N",
            str(inodes),
            "-E",
            "lazy_itable_init=1,nodiscard",
            str(image),
        ],
        check=True,
    )
    subprocess.run(
        ["mount", "-o", "loop,noinit_itable,noatime", str(image), str(mountpoint)], check=True
    )
    return mountpoint


def bench(
    work: Path, repositories: int, *, full: bool, loop: bool, cold: bool = True
) -> dict[str, Any]:
    tag = f"{repositories * 50} tags:"
    folder = mount_image(work, repositories) if loop else work / f"registry-{repositories}"
    registry = RegistryProcess(root=folder)
    out: dict[str, Any] = {"loop_mounted": loop}
    try:
        started = time.perf_counter()
        seeded = scenario.seed(registry.storage_dir, repositories=repositories)
        out["scenario"] = {
            "repositories": len(seeded.repos),
            "tags": seeded.tags,
            "blobs": seeded.blobs,
            "bytes": seeded.bytes,
            "seed_seconds": round(time.perf_counter() - started, 1),
        }
        say(f"{tag} seeded", **out["scenario"])
        registry.start()
        policy = work / f"policy-{repositories}.yaml"
        write_policy(policy, registry.url, registry.storage_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
        env["XDG_STATE_HOME"] = str(work / "state")
        env["XDG_CACHE_HOME"] = str(work / f"cache-{repositories}")
        retention = [sys.executable, "-m", "retention"]
        plan = [*retention, "plan", "-p", str(policy), "--as-of", scenario.NOW.isoformat(), "-q"]
        runs: dict[str, Run] = {}
        if full:
            minimal = [sys.executable, str(ROOT / "benchmarks" / "minimal_client.py")]
            timed(runs, "minimal", "minimal", [*minimal, registry.url], registry, env, tag)
            api_out = work / "plan-api.json"
            api_plan = [*plan, "--inventory-source", "api", "-o", str(api_out)]
            timed(runs, "api_plan", "api", api_plan, registry, env, tag)
        storage_out = work / f"plan-storage-{repositories}.json"
        storage_plan = [*plan, "--inventory-source", "storage", "-o", str(storage_out)]
        if cold and drop_caches():
            timed(runs, "storage_cold", "storage cold", storage_plan, registry, env, tag)
        else:
            out["cold"] = "not measured: --no-drop-caches, or not root"
        # the cold run filled the page cache (or, without root, a first run does)
        if "storage_cold" not in runs:
            measure("storage warm-up", storage_plan, registry, env=env)
        timed(runs, "storage_warm", "storage warm", storage_plan, registry, env, tag)
        out["runs"] = {name: figures(r) for name, r in runs.items()}
        doc = json.loads(storage_out.read_text())
        out["plan"] = {"summary": doc["summary"], "deletions": len(doc["deletions"])}
        if full:
            api_text = (work / "plan-api.json").read_text()
            storage_text = storage_out.read_text()
            out["storage_plan_equals_api_plan_but_inventory_source"] = (
                without_source(api_text) == without_source(storage_text)
                and api_text != storage_text
            )
            out["ratio_warm_to_minimal"] = round(
                runs["storage_warm"].seconds / runs["minimal"].seconds, 4
            )
            if "storage_cold" in runs:
                out["ratio_cold_to_minimal"] = round(
                    runs["storage_cold"].seconds / runs["minimal"].seconds, 4
                )
            out["meets_warm_target"] = out["ratio_warm_to_minimal"] <= TARGET_WARM_RATIO
        else:
            big = runs["storage_warm"]
            out["meets_targets"] = (
                big.seconds <= TARGET_BIG_SECONDS and big.max_rss_mb <= TARGET_BIG_RSS_MB
            )
        say(f"{tag} result", **{k: v for k, v in out.items() if k not in ("runs", "scenario")})
    finally:
        registry.close()
        out["cleanup_seconds"] = remove(work, folder, tag, loop=loop)
    return out


def remove(work: Path, folder: Path, tag: str, *, loop: bool) -> float:
    """Remove a phase's registry folder (or its filesystem) and the plan files at once, timed."""
    started = time.perf_counter()
    if loop:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()
        (work / f"{folder.name}.img").unlink()
    else:
        shutil.rmtree(folder, ignore_errors=True)
    for plan in work.glob("plan-*.json"):
        plan.unlink()
    seconds = round(time.perf_counter() - started, 1)
    say(f"{tag} removed {folder}", seconds=seconds)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repositories", type=int, default=200, help="50 tags each; 0 skips the comparison"
    )
    parser.add_argument("--big", type=int, default=0, help="also N repositories, storage only")
    parser.add_argument("--json", type=Path, help="also write the report here (after each phase)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the work folder goes",
    )
    parser.add_argument(
        "--no-loop",
        action="store_true",
        help="seed into a plain folder (the default, as root, is a loop-mounted image file)",
    )
    parser.add_argument(
        "--no-drop-caches", action="store_true", help="no cold run (the page cache is shared)"
    )
    args = parser.parse_args(argv)
    cold = not args.no_drop_caches
    loop = os.geteuid() == 0 and not args.no_loop
    work = Path(tempfile.mkdtemp(prefix="retention-bench-storage-", dir=args.work_dir))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_at_start": load()}
    say("start", work=str(work), argv=sys.argv[1:])

    def write() -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    try:
        if args.repositories:
            report["small"] = bench(work, args.repositories, full=True, loop=loop, cold=cold)
            write()  # at once: a failure in the big run must not lose these figures
        if args.big:
            report["big"] = bench(work, args.big, full=False, loop=loop, cold=cold)
            write()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_at_end"] = load()
    write()
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
