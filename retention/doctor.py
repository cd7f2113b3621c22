"""`retention doctor`: is this registry ready for retention? One check per line: reachable, API
version, credentials, catalog access, whether deletion is enabled, whether the credentials may
push (for `untag: true`), clock skew.

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
    push: bool = False,
) -> tuple[Check, ...]:
    """Every check, in order; stops after `reachable` when the registry cannot be reached.
    `push` (a policy with `untag: true`) adds whether the credentials may push: a blob upload
    started and cancelled, nothing pushed."""
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
    access, probe = _catalog_and_delete(client, repository)
    checks.extend(access)
    if push:
        checks.append(_push(client, probe))
    checks.append(_clock(ping.server_date, now, max_skew))
    return tuple(checks)


def _catalog_and_delete(
    client: RegistryPort, repository: str | None
) -> tuple[list[Check], str | None]:
    """The catalog and deletion checks, and the repository deletion was probed in."""
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
        return checks, None
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
        return checks, probe
    except RegistryError as exc:
        checks.append(Check("deletion", "fail", f"probe in {probe} failed: {_first(exc)}"))
        return checks, probe
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
    return checks, probe


def _push(client: RegistryPort, probe: str | None) -> Check:
    """Whether the credentials may push, for `untag: true`: the throw-away method pushes a tiny
    manifest to each tag it removes (docs/decisions.md, "Untag: registry side")."""
    if probe is None:
        return Check("push", "warn", "not checked: no repository to probe", "pass --repository")
    try:
        allowed = client.probe_push(probe)
    except RegistryError as exc:
        return Check("push", "fail", f"probe in {probe} failed: {_first(exc)}")
    if allowed:
        return Check("push", "ok", f"allowed in {probe} (an upload started and cancelled)")
    return Check(
        "push",
        "fail",
        f"refused in {probe}",
        hint="untag: true removes a tag with a throw-away manifest where the registry cannot "
        "delete tags: grant push (pull,push,delete) on the repositories it untags in",
    )


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
