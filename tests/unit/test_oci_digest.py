"""`oci.digest_matches`: the one "do these bytes hash to this digest" check, sha256 and sha512."""

from __future__ import annotations

import hashlib

import pytest

from retention import oci

DATA = b'{"schemaVersion":2}'
SHA256 = "sha256:" + hashlib.sha256(DATA).hexdigest()
SHA512 = "sha512:" + hashlib.sha512(DATA).hexdigest()


@pytest.mark.parametrize(
    ("data", "digest", "expected"),
    [
        (DATA, SHA256, True),
        (DATA, SHA512, True),
        (DATA + b" ", SHA256, False),
        (DATA + b" ", SHA512, False),
        (DATA, SHA256.upper(), False),  # the grammar is lower-case hex
        (DATA, "sha384:" + hashlib.sha384(DATA).hexdigest(), False),  # not a registered one
        (DATA, "sha256:" + hashlib.sha256(DATA).hexdigest()[:63], False),
        (DATA, SHA256.removeprefix("sha256:"), False),
    ],
    ids=[
        "sha256",
        "sha512",
        "sha256-other-bytes",
        "sha512-other-bytes",
        "upper-case",
        "sha384",
        "short-hex",
        "no-algorithm",
    ],
)
def test_digest_matches(data: bytes, digest: str, expected: bool) -> None:
    assert oci.digest_matches(data, digest) is expected
