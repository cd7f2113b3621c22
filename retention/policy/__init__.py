"""The policy language: frozen values (`model`) and the loader that builds them (`load`)."""
