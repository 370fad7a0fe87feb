"""Signed cross-region exchange (DESIGN.md §8): keys, partners, envelopes."""
