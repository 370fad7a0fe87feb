"""Audit (docs/architecture.md §9): every access becomes a hash-chained AuditEvent."""
