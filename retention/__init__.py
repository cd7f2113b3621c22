"""retention: a policy-driven retention engine for container registries.

Policies (YAML) are evaluated into a reviewable deletion plan, which `apply` executes through the
registry API. docs/architecture.md maps the modules; docs/policy.md is the policy language.
"""

__version__ = "0.1.0"
