"""Benchmark the cost of apply's policy check (docs/decisions.md, "Apply against the policy") on a
10,000-tag apply with a warm digest cache.

The scenario of `bench_plan.py` is seeded once and copied, so each variant applies the same
registry state: `before` runs the retention source tree given by `--before` (a checkout of the
commit before the check, e.g. `git archive 6d194cb | tar -x -C /tmp/before`), `after` this tree.
Each variant plans with a policy that deletes every `pr-*` build of all 200 repositories (so the
apply touches all 10,000 tags), which also fills its cache, then applies that plan file with
`--yes` (the default for a saved plan: kept tags re-verified). Reported: wall and CPU time, peak
RSS and the registry's requests by kind for each apply, and the difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scenario  # noqa: E402
from benchmarks.bench_plan import measure, write_policy  # noqa: E402
from tests.harness.registry import RegistryProcess  # noqa: E402

RULES = (
    "  - name: bench-apply\n"
    "    match: {repositories: ['.*'], tags: ['pr-.*']}\n"
    "    keep: {last: 0}\n"
)


def run_variant(name: str, source: Path, root: Path, work: Path) -> dict[str, Any]:
    registry = RegistryProcess(root=root)
    try:
        registry.start()
        policy = work / f"policy-{name}.yaml"
        write_policy(policy, registry.url, RULES)
        plan = work / f"plan-{name}.json"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(work),
            "XDG_CACHE_HOME": str(work / f"cache-{name}"),
            "XDG_STATE_HOME": str(work / f"state-{name}"),
        }
        command = [sys.executable, "-m", "retention"]
        as_of = scenario.NOW.isoformat()
        planned = measure(
            f"{name}-plan",
            [*command, "plan", "-p", str(policy), "--as-of", as_of, "-o", str(plan), "-q"],
            registry,
            env=env,
            cwd=source,
        )
        doc = json.loads(plan.read_text())
        applied = measure(
            f"{name}-apply", [*command, "apply", str(plan), "--yes"], registry, env=env, cwd=source
        )
        return {
            "variant": name,
            "source": str(source),
            "plan": {
                "seconds": round(planned.seconds, 2),
                "tags": doc["summary"]["tags"],
                "deletions": len(doc["deletions"]),
                "tags_deleted": doc["summary"]["tags_deleted"],
            },
            "apply": {
                "seconds": round(applied.seconds, 2),
                "cpu_seconds": round(applied.cpu_seconds, 2),
                "max_rss_mb": round(applied.max_rss_mb, 1),
                "requests": applied.requests,
                "total": applied.total,
                "summary": applied.stderr.strip().splitlines()[-3:],
            },
        }
    finally:
        registry.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="retention source tree")
    parser.add_argument("--repositories", type=int, default=200, help="50 tags each")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="retention-bench-apply-"))
    try:
        seed = RegistryProcess(root=work / "seed")
        seeded = scenario.seed(seed.storage_dir, repositories=args.repositories)
        seed.close()
        print(f"seeded {seeded.tags} tags in {len(seeded.repos)} repositories", file=sys.stderr)
        results = []
        for name, source in (("before", args.before.resolve()), ("after", ROOT)):
            root = work / f"registry-{name}"
            shutil.copytree(work / "seed", root)
            results.append(run_variant(name, source, root, work))
            print(json.dumps(results[-1], indent=2), file=sys.stderr)
        before, after = (r["apply"] for r in results)
        kinds = sorted(set(before["requests"]) | set(after["requests"]))
        report = {
            "results": results,
            "added": {
                "seconds": round(after["seconds"] - before["seconds"], 2),
                "cpu_seconds": round(after["cpu_seconds"] - before["cpu_seconds"], 2),
                "requests": {
                    k: after["requests"].get(k, 0) - before["requests"].get(k, 0)
                    for k in kinds
                    if after["requests"].get(k, 0) != before["requests"].get(k, 0)
                },
            },
        }
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
