"""Benchmark `retention plan` (cold and warm) and `retention apply` against a real registry.

Seeds Debian's `docker-registry` 2.8 with 10,000 tags in 200 repositories (written straight into
its filesystem storage, then checked by pulling a sample through the API), then, in the same run
and interleaved so they share the machine's noise: the minimal client (benchmarks/
minimal_client.py, the yardstick), `retention plan` with an empty digest cache (cold) and again
with the cache it filled (warm). Every request is counted from the registry's access log; wall
time is measured around each subprocess and peak RSS read from its own rusage (wait4). Finally
a plan that deletes a known subset is applied and its requests counted.

Usage (from the repository root, in the project's virtualenv):
    python benchmarks/bench_plan.py [--repositories 200] [--repeat 3] [--json results.json]
Loopback only; the registry and every child process stop when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scenario  # noqa: E402
from tests.harness.registry import AccessLogEntry, RegistryProcess  # noqa: E402

CONCURRENCY = 8  # the policy default
CATALOG_PAGE = 1000  # what both clients ask for (distribution's default catalog.maxentries)

# The targets of issue 7.
TARGET_REQUESTS = 1.02  # cold requests / minimum
TARGET_COLD_TIME = 1.15  # cold wall time / minimal client's
TARGET_WARM_TIME = 0.6  # warm wall time / cold
TARGET_RSS_MB = 150.0

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def classify(entry: AccessLogEntry) -> str:
    """The request kind of one access-log line, e.g. `GET manifest_by_tag`."""
    path = entry.path.split("?", 1)[0]
    if path in ("/v2/", "/v2"):
        kind = "ping"
    elif path == "/v2/_catalog":
        kind = "catalog"
    elif path.endswith("/tags/list"):
        kind = "tags_list"
    elif "/manifests/" in path:
        reference = path.rsplit("/manifests/", 1)[1]
        kind = "manifest_by_digest" if _DIGEST.match(reference) else "manifest_by_tag"
    elif "/blobs/" in path:
        kind = "blob"
    else:
        kind = "other"
    return f"{entry.method} {kind}"


def settle(registry: RegistryProcess, mark: int, quiet: float = 0.3) -> list[AccessLogEntry]:
    """Access-log entries after `mark`, once the log has stopped growing for `quiet` seconds
    (the registry writes each line just after its response)."""
    entries = registry.access_log(mark)
    while True:
        time.sleep(quiet)
        later = registry.access_log(mark)
        if len(later) == len(entries):
            return later
        entries = later


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    seconds: float
    cpu_seconds: float  # user + system time of the client process alone
    max_rss_mb: float
    requests: dict[str, int]
    statuses: dict[str, int]
    stdout: str
    stderr: str

    @property
    def total(self) -> int:
        return sum(self.requests.values())


# Runs the measured command from a small process: Linux records the RSS of the process that
# exec()s (here a copy of this benchmark, which holds the scenario and the access logs) in the
# child's ru_maxrss, so spawning from a small launcher keeps the child's figure its own.
_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    cpu = usage.ru_utime + usage.ru_stime
    json.dump({"seconds": seconds, "cpu": cpu, "max_rss_kb": usage.ru_maxrss, "code": code}, out)
"""


def measure(
    name: str,
    command: list[str],
    registry: RegistryProcess,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Run:
    """Run `command` to completion; its wall time, its own peak RSS, and the registry requests
    it made."""
    mark = registry.log_mark()
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(suffix=".json") as figures,
    ):
        subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, figures.name, *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            check=False,
        )
        measured = json.loads(Path(figures.name).read_text() or "{}")
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if measured.get("code") != 0:
        raise RuntimeError(f"{name}: {command} failed ({measured})\n{stderr[-4000:]}")
    entries = settle(registry, mark)
    requests = Counter(classify(e) for e in entries)
    statuses = Counter(str(e.status) for e in entries)
    return Run(
        name=name,
        seconds=measured["seconds"],
        cpu_seconds=measured["cpu"],
        max_rss_mb=measured["max_rss_kb"] / 1024,
        requests=dict(sorted(requests.items())),
        statuses=dict(sorted(statuses.items())),
        stdout=stdout,
        stderr=stderr,
    )


def write_policy(path: Path, url: str, rules: str) -> None:
    path.write_text(
        "version: 1\n"
        f"registry:\n  url: {url}\n"
        "settings:\n  concurrency: 8\n  max_deletions: '100%'\n"
        "protect:\n  tags: ['latest', 'v\\d+\\.\\d+\\.\\d+']\n"
        f"rules:\n{rules}"
    )


PLAN_RULES = """\
  - name: pull-requests
    match: {tags: ['pr-.*']}
    keep: {last: 3, newer_than: 14d}
  - name: mainline
    match: {tags: ['main-.*']}
    keep: {last: 10, newer_than: 30d}
  - name: everything-else
    match: {}
    keep: all
"""

# apply: every pull-request build of one team's ten repositories, nothing else; each variant
# takes another team, so every apply starts from the seeded state
APPLY_VARIANTS: tuple[tuple[str, str, list[str]], ...] = (
    ("saved plan (default: kept tags re-verified)", "team-00/.*", []),
    ("saved plan --no-verify-kept-tags", "team-01/.*", ["--no-verify-kept-tags"]),
)


def apply_rules(repositories: str) -> str:
    return (
        "  - name: bench-apply\n"
        f"    match: {{repositories: ['{repositories}'], tags: ['pr-.*']}}\n"
        "    keep: {last: 0}\n"
    )


def apply_expectation(seeded: scenario.Scenario, repositories: str) -> dict[str, int]:
    """What the apply policy must delete in the seeded scenario, worked out independently."""
    manifests = listed_tags = untagged = kept_tags = 0
    for repo in seeded.repos:
        if not re.fullmatch(repositories, repo.name):
            continue
        doomed = {d for t, d in repo.tags.items() if t.startswith("pr-")}
        doomed |= {s for s, subject in repo.signs.items() if subject in doomed}
        children = {c for d in doomed for c in repo.children.get(d, ())}
        manifests += len(doomed) + len(children)
        untagged += len(children)
        listed_tags += sum(1 for d in repo.tags.values() if d in doomed)
        kept_tags += sum(1 for d in repo.tags.values() if d not in doomed)
    return {
        "manifests": manifests,
        "tags": listed_tags,
        "untagged": untagged,
        "kept_tags_in_touched_repositories": kept_tags,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f" (min {min(values):.2f}, max {max(values):.2f})"


def retention_command(args: argparse.Namespace) -> list[str]:
    return [*args.python, "-m", "retention"]


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="retention-bench-"))
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "registry": subprocess.run(
                ["/usr/bin/docker-registry", "--version"], capture_output=True, text=True
            ).stdout.strip(),
        },
        "concurrency": CONCURRENCY,
    }
    registry = RegistryProcess(root=work / "registry")
    try:
        started = time.perf_counter()
        seeded = scenario.seed(registry.storage_dir, repositories=args.repositories)
        report["scenario"] = {
            "repositories": len(seeded.repos),
            "tags": seeded.tags,
            "index_children": seeded.index_children,
            "configs": seeded.configs,
            "blobs": seeded.blobs,
            "bytes": seeded.bytes,
            "seed_seconds": round(time.perf_counter() - started, 1),
        }
        minimum = seeded.minimum(CATALOG_PAGE)
        report["minimum"] = {**minimum, "total": sum(minimum.values())}
        print(f"seeded {report['scenario']}", file=sys.stderr)
        registry.start()
        report["scenario"]["sample_objects_pulled"] = scenario.verify_sample(registry.url, seeded)
        policy = work / "policy.yaml"
        write_policy(policy, registry.url, PLAN_RULES)
        runs: dict[str, list[Run]] = {"minimal": [], "cold": [], "warm": []}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
        base_env["XDG_STATE_HOME"] = str(work / "state")  # journals and locks stay in `work`
        plan_args = ["plan", "-p", str(policy), "--as-of", scenario.NOW.isoformat()]
        for round_ in range(args.repeat):
            runs["minimal"].append(
                measure(
                    "minimal",
                    [*args.python, str(ROOT / "benchmarks" / "minimal_client.py"), registry.url],
                    registry,
                )
            )
            cache = work / f"cache-{round_}"
            env = {**base_env, "XDG_CACHE_HOME": str(cache)}
            for phase in ("cold", "warm"):
                out = work / f"plan-{phase}-{round_}.json"
                runs[phase].append(
                    measure(
                        phase,
                        [*retention_command(args), *plan_args, "-o", str(out)],
                        registry,
                        env=env,
                    )
                )
            shutil.rmtree(cache, ignore_errors=True)
            print(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{k} {v[-1].seconds:.2f}s {v[-1].total} req {v[-1].max_rss_mb:.0f} MB"
                    for k, v in runs.items()
                ),
                file=sys.stderr,
            )
        plan = json.loads((work / "plan-cold-0.json").read_text())
        report["plan"] = {"summary": plan.get("summary"), "deletions": len(plan["deletions"])}
        report["runs"] = {
            name: [
                {
                    "seconds": round(r.seconds, 3),
                    "cpu_seconds": round(r.cpu_seconds, 2),
                    "max_rss_mb": round(r.max_rss_mb, 1),
                    "requests": r.requests,
                    "total": r.total,
                    "statuses": r.statuses,
                }
                for r in rs
            ]
            for name, rs in runs.items()
        }
        report["ratios"] = ratios(report)
        if not args.skip_apply:
            report["apply"] = bench_apply(args, registry, seeded, work, base_env)
    finally:
        registry.close()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    runs = report["runs"]
    minimum = report["minimum"]["total"]

    def med(name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    cold_requests = med("cold", "total")
    warm_fetches = max(
        r["requests"].get("GET blob", 0) + r["requests"].get("GET manifest_by_digest", 0)
        for r in runs["warm"]
    )
    # the same ratios round by round: the three runs of a round share the machine's load
    paired_cold = [
        c["seconds"] / m["seconds"] for c, m in zip(runs["cold"], runs["minimal"], strict=True)
    ]
    paired_warm = [
        w["seconds"] / c["seconds"] for w, c in zip(runs["warm"], runs["cold"], strict=True)
    ]
    out = {
        "cold_requests_over_minimum": round(cold_requests / minimum, 4),
        "cold_time_over_minimal_by_round": [round(x, 3) for x in paired_cold],
        "cold_time_over_minimal_paired_median": round(median(paired_cold), 3),
        "warm_time_over_cold_by_round": [round(x, 3) for x in paired_warm],
        "cold_cpu_over_minimal": round(
            med("cold", "cpu_seconds") / med("minimal", "cpu_seconds"), 3
        ),
        "cold_time_over_minimal": round(med("cold", "seconds") / med("minimal", "seconds"), 3),
        "warm_time_over_cold": round(med("warm", "seconds") / med("cold", "seconds"), 3),
        "warm_config_and_child_requests": warm_fetches,
        "peak_rss_mb": max(r["max_rss_mb"] for name in ("cold", "warm") for r in runs[name]),
    }
    out["met"] = {
        "requests": out["cold_requests_over_minimum"] <= TARGET_REQUESTS,
        "cold_time": out["cold_time_over_minimal"] <= TARGET_COLD_TIME,
        "warm_time": out["warm_time_over_cold"] <= TARGET_WARM_TIME,
        "warm_no_fetches": warm_fetches == 0,
        "rss": out["peak_rss_mb"] <= TARGET_RSS_MB,
    }
    return out


def bench_apply(
    args: argparse.Namespace,
    registry: RegistryProcess,
    seeded: scenario.Scenario,
    work: Path,
    base_env: dict[str, str],
) -> list[dict[str, Any]]:
    env = {**base_env, "XDG_CACHE_HOME": str(work / "cache-apply")}
    results = []
    for number, (name, repositories, options) in enumerate(APPLY_VARIANTS):
        policy = work / f"apply-policy-{number}.yaml"
        write_policy(policy, registry.url, apply_rules(repositories))
        plan_path = work / f"apply-plan-{number}.json"
        measure(
            "apply-plan",
            [*retention_command(args), "plan", "-p", str(policy), "-o", str(plan_path)],
            registry,
            env=env,
        )
        plan = json.loads(plan_path.read_text())
        entries = plan["deletions"]
        listed = sum(len(e["tags"]) for e in entries)
        untagged = sum(1 for e in entries if not e["tags"])
        expected = apply_expectation(seeded, repositories)
        run = measure(
            "apply",
            [*retention_command(args), "apply", str(plan_path), "--yes", *options],
            registry,
            env=env,
        )

        def is_verification(kind: str) -> bool:
            method, what = kind.split()
            return method in ("HEAD", "GET") and what.startswith("manifest")

        verify = sum(n for k, n in run.requests.items() if is_verification(k))
        deletes = sum(n for k, n in run.requests.items() if k.startswith("DELETE"))
        other = {
            k: n
            for k, n in run.requests.items()
            if not k.startswith("DELETE") and not is_verification(k)
        }
        results.append(
            {
                "variant": name,
                "command": f"retention apply PLAN.json --yes {' '.join(options)}".strip(),
                "repositories": repositories,
                "expected_from_seed": expected,
                "plan": {
                    "entries": len(entries),
                    "listed_tags": listed,
                    "untagged_entries": untagged,
                },
                "requests": run.requests,
                "statuses": run.statuses,
                "verification_requests": verify,
                "deletes": deletes,
                "other_requests": other,
                "seconds": round(run.seconds, 3),
                "max_rss_mb": round(run.max_rss_mb, 1),
                "met": {
                    "plan_matches_seed": (len(entries), listed, untagged)
                    == (expected["manifests"], expected["tags"], expected["untagged"]),
                    "verification": verify == listed + untagged,
                    "deletes": deletes == len(entries),
                    "nothing_more": sum(other.values()) == 0,
                },
            }
        )
    return results


def render(report: dict[str, Any]) -> str:
    lines = []
    sc = report["scenario"]
    lines.append(
        f"scenario: {sc['repositories']} repositories, {sc['tags']} tags, "
        f"{sc['index_children']} index children, {sc['configs']} configs "
        f"({sc['blobs']} blobs, {sc['bytes'] / 1e6:.1f} MB; seeded in {sc['seed_seconds']} s)"
    )
    m = report["minimum"]
    lines.append(
        "minimum cold requests: "
        + ", ".join(f"{k} {v}" for k, v in m.items() if k != "total")
        + f" = {m['total']}"
    )
    lines.append("")
    lines.append(
        f"{'run':<8} {'wall s (median)':>26} {'client CPU s':>13} {'requests':>9} "
        f"{'peak RSS MB':>12}"
    )
    for name, runs in report["runs"].items():
        secs = [r["seconds"] for r in runs]
        totals = sorted({r["total"] for r in runs})
        rss = max(r["max_rss_mb"] for r in runs)
        cpu = median([r["cpu_seconds"] for r in runs])
        lines.append(
            f"{name:<8} {median(secs):>8.2f}{spread(secs):<18} {cpu:>13.1f} "
            f"{'/'.join(map(str, totals)):>9} {rss:>12.1f}"
        )
    lines.append("")
    for name, runs in report["runs"].items():
        lines.append(f"{name} requests: {runs[0]['requests']}  statuses: {runs[0]['statuses']}")
    r = report["ratios"]
    lines.append("")
    lines.append(
        f"cold requests / minimum = {r['cold_requests_over_minimum']:.4f} "
        f"(target <= {TARGET_REQUESTS}) {'met' if r['met']['requests'] else 'NOT MET'}"
    )
    lines.append(
        f"cold time / minimal client = {r['cold_time_over_minimal']:.3f} "
        f"(target <= {TARGET_COLD_TIME}) {'met' if r['met']['cold_time'] else 'NOT MET'}"
    )
    lines.append(
        f"  by round: {r['cold_time_over_minimal_by_round']} "
        f"(median {r['cold_time_over_minimal_paired_median']:.3f}); "
        f"client CPU cold / minimal = {r['cold_cpu_over_minimal']:.3f}"
    )
    lines.append(
        f"warm time / cold = {r['warm_time_over_cold']:.3f} "
        f"(target <= {TARGET_WARM_TIME}) {'met' if r['met']['warm_time'] else 'NOT MET'}"
    )
    lines.append(f"  by round: {r['warm_time_over_cold_by_round']}")
    lines.append(
        f"warm config + child-manifest requests = {r['warm_config_and_child_requests']} "
        f"(target 0) {'met' if r['met']['warm_no_fetches'] else 'NOT MET'}"
    )
    lines.append(
        f"peak RSS = {r['peak_rss_mb']:.1f} MB (target <= {TARGET_RSS_MB:.0f}) "
        f"{'met' if r['met']['rss'] else 'NOT MET'}"
    )
    for a in report.get("apply", []):
        p = a["plan"]
        lines.append("")
        lines.append(f"apply, {a['variant']}: `{a['command']}` on {a['repositories']}")
        lines.append(
            f"  plan lists {p['entries']} manifests, {p['listed_tags']} tags, "
            f"{p['untagged_entries']} untagged entries (seed expects {a['expected_from_seed']})"
        )
        lines.append(
            f"  {a['verification_requests']} verification requests "
            f"(target {p['listed_tags'] + p['untagged_entries']}), "
            f"{a['deletes']} DELETEs (target {p['entries']}), other requests "
            f"{a['other_requests'] or 'none'}; {a['seconds']:.2f} s, {a['max_rss_mb']:.0f} MB"
        )
        lines.append(f"  requests: {a['requests']}  statuses: {a['statuses']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=200, help="50 tags each")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--skip-apply", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--python",
        nargs="+",
        default=[sys.executable],
        help="interpreter (and options) for the clients, e.g. py-spy record -o x.svg -- python",
    )
    args = parser.parse_args(argv)
    report = run_benchmark(args)
    text = render(report)
    sys.stdout.write(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
