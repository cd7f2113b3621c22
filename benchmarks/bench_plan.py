"""Benchmark `retention plan` (cold and warm) and `retention apply` against a real registry.

Seeds Debian's `docker-registry` 2.8 with 10,000 tags in 200 repositories (written straight into
its filesystem storage, then checked by pulling a sample through the API), then, in the same run
and interleaved so they share the machine's noise: the minimal client (benchmarks/
minimal_client.py, the yardstick), `retention plan` with an empty digest cache (cold) and again
with the cache it filled (warm). Every request is counted from the registry's access log; wall
time is measured around each subprocess and peak RSS read from its own rusage (wait4). Finally
a plan that deletes a known subset is applied and its requests counted.

With `--peer PATH/registry.py` (registry-cli, github.com/andrey-pohilko/registry-cli, supplied
by the user and never part of this repository) every round (or every K-th, `--peer-repeat K`)
also runs that widely used cleanup script in its closest mode to `retention plan`: a dry run of
"keep the newest N tags of every repository" (`peer_command`). It is measured like the others,
and the run fails if the access log shows it wrote anything (a DELETE) or did not list every
repository.

Usage (from the repository root, in the project's virtualenv):
    python benchmarks/bench_plan.py [--repositories 200] [--repeat 3] [--json results.json]
        [--peer /path/to/registry.py --peer-python /path/to/venv/bin/python [--peer-repeat K]]
Loopback only; the registry and every child process stop when it ends.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
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


# -- the peer: registry-cli's registry.py ---------------------------------------------------------

# Its closest equivalent of the policy: keep the newest N tags of every repository by image
# creation date (`--order-by-date`; by name, its default, would be meaningless for main-<sha>
# tags), N the policy's largest `keep: last` (main-.*: 10); protect what the policy protects.
# The peer uses re.search, so the patterns are anchored to match exactly what the policy's
# (full-match) protect patterns match.
PEER_KEEP_LAST = 10
PEER_KEEP_TAGS_LIKE = ("^latest$", r"^v\d+\.\d+\.\d+$")
_READS = frozenset({"GET", "HEAD"})


class PeerWroteError(RuntimeError):
    """The peer changed the registry (or did not walk it): its figures mean nothing."""


def peer_command(args: argparse.Namespace, url: str, repositories: list[str]) -> list[str]:
    """The peer's command line: a dry run of "delete all but the newest N tags by date".

    `-i` names every repository: registry-cli lists them with `GET /v2/_catalog?n=10000`, which
    distribution 2.8 answers 400 (n above its catalog.maxentries, 1000), and then does nothing
    and exits 0. Naming them keeps the registry's configuration the same for every client.
    `--digest-method HEAD` is its default, for a standard registry (GET is for Nexus).
    """
    return [
        str(args.peer_python),
        str(args.peer),
        "-r",
        url,
        "-i",
        *repositories,
        "--delete",
        "--dry-run",
        "--num",
        str(PEER_KEEP_LAST),
        "--order-by-date",
        "--digest-method",
        "HEAD",
        "--keep-tags-like",
        *PEER_KEEP_TAGS_LIKE,
    ]


def peer_env(base: dict[str, str]) -> dict[str, str]:
    """The peer's environment: without proxy variables (the peer's `requests` would honour them
    and send the loopback traffic elsewhere; the other clients ignore them)."""
    return {k: v for k, v in base.items() if not k.lower().endswith("_proxy")}


def check_peer(run: Run, repositories: int) -> None:
    """Fail loudly unless the peer only read, and read every repository's tag list."""
    writes = {k: n for k, n in run.requests.items() if k.split()[0] not in _READS}
    if writes:
        raise PeerWroteError(
            f"the peer wrote to the registry, it must delete nothing: {writes} "
            f"(all requests {run.requests}); its output ends:\n{run.stdout[-2000:]}"
        )
    listed = run.requests.get("GET tags_list", 0)
    if listed != repositories:
        raise PeerWroteError(
            f"the peer listed the tags of {listed} of {repositories} repositories: it did not "
            f"walk the registry (requests {run.requests}); its output ends:\n{run.stdout[-2000:]}"
        )


def run_peer(
    args: argparse.Namespace,
    registry: RegistryProcess,
    repositories: list[str],
    env: dict[str, str] | None = None,
) -> Run:
    """Measure one peer run and check it (`check_peer`)."""
    base = dict(os.environ) if env is None else env
    run = measure(
        "peer", peer_command(args, registry.url, repositories), registry, env=peer_env(base)
    )
    check_peer(run, len(repositories))
    return run


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return median([r[key] for r in runs])


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
    if args.peer is not None:
        report["peer"] = {
            "script": str(args.peer),
            "script_sha256": file_sha256(args.peer),
            "python": str(args.peer_python),
            "every_kth_round": args.peer_repeat,
            "command": "registry.py "
            + shlex.join(peer_command(args, "URL", ["REPOSITORY..."])[2:]),
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
        rounds: dict[str, list[int]] = {"minimal": [], "cold": [], "warm": []}
        if args.peer is not None:
            runs["peer"] = []
            rounds["peer"] = []
        repositories = [repo.name for repo in seeded.repos]
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
            rounds["minimal"].append(round_)
            if args.peer is not None and round_ % args.peer_repeat == 0:
                runs["peer"].append(run_peer(args, registry, repositories, base_env))
                rounds["peer"].append(round_)
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
                rounds[phase].append(round_)
            shutil.rmtree(cache, ignore_errors=True)
            print(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{k} {v[-1].seconds:.2f}s {v[-1].total} req {v[-1].max_rss_mb:.0f} MB"
                    for k, v in runs.items()
                    if rounds[k] and rounds[k][-1] == round_
                ),
                file=sys.stderr,
            )
        plan = json.loads((work / "plan-cold-0.json").read_text())
        report["plan"] = {"summary": plan.get("summary"), "deletions": len(plan["deletions"])}
        report["runs"] = {
            name: [
                {
                    "round": n + 1,
                    "seconds": round(r.seconds, 3),
                    "cpu_seconds": round(r.cpu_seconds, 2),
                    "max_rss_mb": round(r.max_rss_mb, 1),
                    "requests": r.requests,
                    "total": r.total,
                    "statuses": r.statuses,
                }
                for n, r in zip(rounds[name], rs, strict=True)
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
        return median_of(runs[name], key)

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
    if runs.get("peer"):
        out["peer"] = peer_ratios(report)
    return out


def peer_ratios(report: dict[str, Any]) -> dict[str, Any]:
    """The peer against the runs of the same rounds (it may run in only some of them)."""
    runs = report["runs"]
    peer = runs["peer"]
    same_round = {name: {r["round"]: r for r in runs[name]} for name in ("minimal", "cold")}
    cold = [same_round["cold"][p["round"]] for p in peer]
    minimal = [same_round["minimal"][p["round"]] for p in peer]

    med = median_of
    requests = med(peer, "total")
    return {
        "rounds": [p["round"] for p in peer],
        "time_over_cold": round(med(peer, "seconds") / med(cold, "seconds"), 3),
        "time_over_cold_by_round": [
            round(p["seconds"] / c["seconds"], 3) for p, c in zip(peer, cold, strict=True)
        ],
        "time_over_minimal": round(med(peer, "seconds") / med(minimal, "seconds"), 3),
        "cpu_over_cold": round(med(peer, "cpu_seconds") / med(cold, "cpu_seconds"), 3),
        "requests_over_minimum": round(requests / report["minimum"]["total"], 4),
        "requests_over_cold": round(requests / med(cold, "total"), 4),
        "requests_per_tag": round(requests / report["scenario"]["tags"], 3),
        "writes": sum(
            n for p in peer for k, n in p["requests"].items() if k.split()[0] not in _READS
        ),
    }


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

        def is_confirmation(kind: str) -> bool:
            # the HEAD by digest after each 202 DELETE, which must answer 404
            return kind == "HEAD manifest_by_digest"

        def is_verification(kind: str) -> bool:
            method, what = kind.split()
            return (
                method in ("HEAD", "GET")
                and what.startswith("manifest")
                and not is_confirmation(kind)
            )

        verify = sum(n for k, n in run.requests.items() if is_verification(k))
        confirmations = sum(n for k, n in run.requests.items() if is_confirmation(k))
        deletes = sum(n for k, n in run.requests.items() if k.startswith("DELETE"))
        other = {
            k: n
            for k, n in run.requests.items()
            if not k.startswith("DELETE") and not is_verification(k) and not is_confirmation(k)
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
                "delete_confirmations": confirmations,
                "other_requests": other,
                "seconds": round(run.seconds, 3),
                "max_rss_mb": round(run.max_rss_mb, 1),
                "met": {
                    "plan_matches_seed": (len(entries), listed, untagged)
                    == (expected["manifests"], expected["tags"], expected["untagged"]),
                    "verification": verify == listed + untagged,
                    "deletes": deletes == len(entries),
                    "confirmations": confirmations == len(entries),
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
        f"{'run':<8} {'wall s (median)':<34} {'client CPU s':>13} {'requests':>9} "
        f"{'peak RSS MB':>12}"
    )
    for name, runs in report["runs"].items():
        secs = [r["seconds"] for r in runs]
        totals = sorted({r["total"] for r in runs})
        rss = max(r["max_rss_mb"] for r in runs)
        cpu = median([r["cpu_seconds"] for r in runs])
        lines.append(
            f"{name:<8} {median(secs):>8.2f}{spread(secs):<26} {cpu:>13.1f} "
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
    if "peer" in r:
        pr = r["peer"]
        lines.append("")
        lines.append(f"peer: {report['peer']['command']}")
        lines.append(
            f"  in rounds {pr['rounds']}: peer time / cold plan = {pr['time_over_cold']:.3f} "
            f"(by round {pr['time_over_cold_by_round']}), peer time / minimal client = "
            f"{pr['time_over_minimal']:.3f}, client CPU peer / cold = {pr['cpu_over_cold']:.3f}"
        )
        lines.append(
            f"  peer requests / minimum = {pr['requests_over_minimum']:.4f} "
            f"({pr['requests_per_tag']:.3f} per tag; / cold plan = {pr['requests_over_cold']:.4f})"
            f"; writes (DELETE) = {pr['writes']}"
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
            f"{a['deletes']} DELETEs (target {p['entries']}), "
            f"{a['delete_confirmations']} confirming HEADs by digest (target {p['entries']}), "
            "other requests "
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
    parser.add_argument(
        "--peer",
        type=Path,
        metavar="PATH",
        help="also run registry-cli's registry.py (github.com/andrey-pohilko/registry-cli; "
        "not part of this repository) in every round, as a dry run",
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=Path(sys.executable),
        metavar="PATH",
        help="interpreter that has the peer's dependencies (requests, python-dateutil, "
        "www-authenticate); default: this one",
    )
    parser.add_argument(
        "--peer-repeat",
        type=int,
        default=1,
        metavar="K",
        help="run the peer only in every K-th round (1, 1+K, 1+2K, ...), still interleaved; "
        "default 1: every round",
    )
    args = parser.parse_args(argv)
    if args.peer is not None and not args.peer.is_file():
        parser.error(f"--peer {args.peer}: no such file")
    if args.peer_repeat < 1:
        parser.error("--peer-repeat must be at least 1")
    if args.peer is not None:
        # fail now, not after seeding 10,000 tags, when its interpreter lacks its dependencies
        check = subprocess.run(
            [str(args.peer_python), str(args.peer), "--help"], capture_output=True, text=True
        )
        if check.returncode != 0:
            parser.error(f"--peer {args.peer} does not start:\n{check.stderr[-2000:]}")
    report = run_benchmark(args)
    text = render(report)
    sys.stdout.write(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
