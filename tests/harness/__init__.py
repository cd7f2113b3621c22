"""Test harness: a real `docker-registry` process and an API-speaking image pusher.

Used by tests and benchmarks only; it never imports `retention`, so it can check the engine
against the registry without sharing the engine's bugs.
"""
