"""Everything that speaks HTTP to a registry; the only package that imports `requests`.

`api` (the port and its values) · `client` (the endpoints) · `transport` (session, TLS, deadlines,
retries, redirects) · `deadlines` (the watchdog) · `auth` (challenges, tokens, Authenticator) ·
`credentials` (policy, docker config, helpers) · `listing` (pagination). URL redaction and
comparison are pure and live in `retention.urls`.
"""

from retention.registry.api import (
    FetchedManifest,
    ManifestRef,
    Ping,
    RegistryPort,
    RetryPolicy,
    RunDeadline,
)
from retention.registry.client import RegistryClient

__all__ = [
    "FetchedManifest",
    "ManifestRef",
    "Ping",
    "RegistryClient",
    "RegistryPort",
    "RetryPolicy",
    "RunDeadline",
]
