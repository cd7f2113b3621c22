"""`retention doctor`: is this registry ready for retention? One check per line: reachable, API
version, credentials, catalog access, whether deletion is enabled, clock skew.

May import registry (through its port, `registry.api.RegistryPort`) and errors; never prints.
Deletion is probed with a DELETE of the all-zero sha256 digest, never a real one
(docs/decisions.md, "Doctor").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from retention.errors import AuthError, DeleteDisabledError, RegistryError, TransportError
from retention.registry.api import RegistryPort
from retention.text import first_line, untrusted

Status = Literal["ok", "warn", "fail"]

MAX_CLOCK_SKEW = timedelta(minutes=5)
API_VERSION = "registry/2.0"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str
    hint: str | None = None


def _first(exc: RegistryError) -> str:
    return first_line(exc.diagnostics())


def _skew_text(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def run_checks(
    client: RegistryPort,
    *,
    now: datetime,
    repository: str | None = None,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> tuple[Check, ...]:
    """Every check, in order; stops after `reachable` when the registry cannot be reached."""
    checks: list[Check] = []
    try:
        ping = client.ping()
    except AuthError as exc:
        checks.append(Check("reachable", "ok", f"{client.url} answered"))
        checks.append(
            Check(
                "credentials",
                "fail",
                f"{client.credential_source}: rejected ({_first(exc)})",
                hint="check the policy's registry.auth, or `docker login` for docker-config",
            )
        )
        return tuple(checks)
    except TransportError as exc:
        checks.append(
            Check(
                "reachable",
                "fail",
                f"{client.url}: {_first(exc)}",
                hint="check registry.url, the network, and registry.tls",
            )
        )
        return tuple(checks)
    except RegistryError as exc:
        checks.append(Check("reachable", "fail", f"{client.url}: {_first(exc)}"))
        return tuple(checks)
    checks.append(Check("reachable", "ok", f"{client.url} answered GET /v2/ with {ping.status}"))
    if ping.api_version == API_VERSION:
        checks.append(Check("api version", "ok", f"Docker-Distribution-API-Version: {API_VERSION}"))
    else:
        found = untrusted(ping.api_version) if ping.api_version else "missing"
        checks.append(
            Check(
                "api version",
                "warn",
                f"Docker-Distribution-API-Version header is {found}, expected {API_VERSION}",
                hint="a proxy may strip it; retention is tested against distribution",
            )
        )
    if ping.status == 200:
        checks.append(Check("credentials", "ok", f"{client.credential_source}: accepted"))
    else:
        checks.append(
            Check(
                "credentials",
                "fail",
                f"{client.credential_source}: GET /v2/ answered {ping.status}",
                hint="check the policy's registry.auth, or `docker login` for docker-config",
            )
        )
    checks.extend(_catalog_and_delete(client, repository))
    checks.append(_clock(ping.server_date, now, max_skew))
    return tuple(checks)


def _catalog_and_delete(client: RegistryPort, repository: str | None) -> list[Check]:
    checks: list[Check] = []
    first: str | None = None
    pages = client.catalog()
    try:
        first = next(pages, None)
    except AuthError as exc:
        checks.append(
            Check(
                "catalog",
                "fail",
                f"denied: {_first(exc)}",
                hint="plan needs the catalog: grant registry:catalog:* to these credentials",
            )
        )
    except RegistryError as exc:
        checks.append(Check("catalog", "fail", _first(exc)))
    else:
        text = f"allowed (first repository: {first})" if first else "allowed (no repositories)"
        checks.append(Check("catalog", "ok", text))
    finally:
        close = getattr(pages, "close", None)
        if callable(close):
            close()
    probe = repository or first
    if probe is None:
        checks.append(
            Check(
                "deletion",
                "warn",
                "not checked: no repository to probe",
                hint="pass --repository NAME",
            )
        )
        return checks
    try:
        enabled = client.probe_delete(probe)
    except DeleteDisabledError:
        enabled = False
    except AuthError as exc:
        checks.append(
            Check(
                "deletion",
                "fail",
                f"not allowed in {probe}: {_first(exc)}",
                hint="apply needs the delete action (pull,delete) on every repository it cleans",
            )
        )
        return checks
    except RegistryError as exc:
        checks.append(Check("deletion", "fail", f"probe in {probe} failed: {_first(exc)}"))
        return checks
    if enabled:
        checks.append(
            Check("deletion", "ok", f"enabled (DELETE of the all-zero digest in {probe}: 404)")
        )
    else:
        checks.append(
            Check(
                "deletion",
                "fail",
                f"disabled (DELETE of the all-zero digest in {probe}: 405 UNSUPPORTED)",
                hint="set storage.delete.enabled: true in the registry's config and restart it; "
                "a read-only registry or a pull-through cache cannot delete",
            )
        )
    return checks


def _clock(server_date: datetime | None, now: datetime, max_skew: timedelta) -> Check:
    if server_date is None:
        return Check("clock", "warn", "the registry sent no Date header: skew unknown")
    skew = now - server_date
    text = f"differs from the registry's by {_skew_text(skew)}"
    if abs(skew) > max_skew:
        return Check(
            "clock",
            "warn",
            text,
            hint="image ages and plan ages depend on this clock: sync it (NTP)",
        )
    return Check("clock", "ok", text)
