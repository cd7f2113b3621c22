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
Loopback only; the registries and their folders are removed at the end.
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


def figures(run: Run) -> dict[str, Any]:
    return {
        "seconds": round(run.seconds, 3),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "max_rss_mb": round(run.max_rss_mb, 1),
        "requests": run.total,
    }


def without_source(text: str) -> str:
    doc = json.loads(text)
    doc.pop("inventory_source", None)
    return json.dumps(doc, sort_keys=True)


def bench(work: Path, repositories: int, *, full: bool) -> dict[str, Any]:
    registry = RegistryProcess(root=work / f"registry-{repositories}")
    out: dict[str, Any] = {}
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
        print(f"seeded {out['scenario']}", file=sys.stderr)
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
            runs["minimal"] = measure("minimal", [*minimal, registry.url], registry)
            api_out = work / "plan-api.json"
            runs["api_plan"] = measure(
                "api", [*plan, "--inventory-source", "api", "-o", str(api_out)], registry, env=env
            )
        storage_out = work / f"plan-storage-{repositories}.json"
        storage_plan = [*plan, "--inventory-source", "storage", "-o", str(storage_out)]
        if drop_caches():
            runs["storage_cold"] = measure("storage cold", storage_plan, registry, env=env)
        else:
            out["cold"] = "not measured: dropping the page cache needs root"
        # the cold run filled the page cache (or, without root, a first run does)
        if "storage_cold" not in runs:
            measure("storage warm-up", storage_plan, registry, env=env)
        runs["storage_warm"] = measure("storage warm", storage_plan, registry, env=env)
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
    finally:
        registry.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=200, help="50 tags each")
    parser.add_argument("--big", type=int, default=0, help="also N repositories, storage only")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="retention-bench-storage-"))
    try:
        report: dict[str, Any] = {"cpus": os.cpu_count()}
        report["small"] = bench(work, args.repositories, full=True)
        # written at once: a failure in the big run must not lose these figures
        print(json.dumps(report["small"], indent=2, sort_keys=True), file=sys.stderr, flush=True)
        if args.big:
            report["big"] = bench(work, args.big, full=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
