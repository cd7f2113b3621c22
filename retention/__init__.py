"""retention: a policy-driven retention engine for container registries.

Policies (YAML) are evaluated into a reviewable deletion plan, which `apply` executes through the
registry API. See DESIGN.md in the project's shared folder for the contract.
"""

__version__ = "0.1.0"
