"""retention: a policy-driven retention engine for container registries.

Policies (YAML) are evaluated into a reviewable deletion plan, which `apply` executes through the
registry API. The newcomer's map (docs/architecture.md has a row per module and what it may import):

- Values and vocabulary (pure): `errors` (the one error tree), `oci` (media types, digests,
  manifests), `model` (the inventory), `policy/` (the policy language and its loader), `plan`
  (the deletion plan), `text` and `urls` (wording, escaping, URL normal forms).
- Deciding (pure): `evaluate/` turns a policy and an inventory into a `Plan`; `markdown` and
  `plan` render it; `starter` writes a first policy for `retention init`.
- Reading the world: `registry/` (the only package that speaks HTTP), `inventory` (the API walk,
  with `cache`), `storage` (the registry's filesystem, read-only).
- Acting: `apply/` (re-verify, DELETE, untag, journal), `journal`, `restore`, `doctor`, `gc`.
- Running: `workflow` (the use cases), `schedule` and `runlog` (cron runs), `files` and `state`
  (atomic writes, locks, XDG paths), `progress`; `cli/` parses, prints and exits.
"""

__version__ = "0.1.0"
