"""Resident identity (docs/architecture.md §6): ID numbers, record numbers, matching, merging."""
