"""The policy language: frozen values (`model`) and the loader that builds them (`load`), one
room per step: `nodes` (YAML with marks) → `env` (`${VAR}`) → `schema` → `checks` → `build`;
`report` collects the diagnostics, `patterns` compiles RE2 (docs/architecture.md)."""
