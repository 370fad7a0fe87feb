"""Mutual recognition of examination and test results (docs/architecture.md §7)."""
