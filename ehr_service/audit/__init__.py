"""Audit (DESIGN.md §9): every access becomes a hash-chained AuditEvent."""
