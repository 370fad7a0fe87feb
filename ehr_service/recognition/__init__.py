"""Mutual recognition of examination and test results (DESIGN.md §7)."""
