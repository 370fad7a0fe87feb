"""Resident identity (DESIGN.md §6): ID numbers, record numbers, matching, merging."""
