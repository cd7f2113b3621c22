"""Everything that speaks HTTP to a registry: the client (`registry.client`) and auth
(`registry.auth`). The only package that imports `requests`.
"""

from retention.registry.client import (
    FetchedManifest,
    ManifestRef,
    Ping,
    RegistryClient,
    RetryPolicy,
    RunDeadline,
)

__all__ = ["FetchedManifest", "ManifestRef", "Ping", "RegistryClient", "RetryPolicy", "RunDeadline"]
