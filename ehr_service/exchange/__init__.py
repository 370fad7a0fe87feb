"""Signed cross-region exchange (docs/architecture.md §8): keys, partners, envelopes."""
