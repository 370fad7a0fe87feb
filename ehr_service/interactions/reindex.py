"""Rebuild the search indexes from stored resources (``ehr-service reindex``),
after search parameter definitions change. Batches commit one by one, so a
large database is reindexed with bounded memory and can be resumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.search.values import index_rows
from ehr_service.interactions.context import Services
from ehr_service.storage import resources
from ehr_service.storage.search_index import clear_index, replace_index


def reindex(
    services: Services,
    resource_type: str | None = None,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Recompute every live resource's index rows; returns how many were reindexed."""
    protection = services.identity.protection

    def index_form(content: bytes) -> dict[str, Any]:
        # Sealed ID numbers are indexed by their blind tokens, as when written.
        return protection.index_form(jsonio.loads(content))

    done = 0
    after: tuple[str, str] | None = None
    with services.unit.write() as conn:
        clear_index(conn, resource_type)  # also drops rows of parameters no longer defined
    while True:
        with services.unit.write() as conn:
            batch = resources.live_batch(conn, resource_type, after, batch_size)
            if not batch:
                return done
            replace_index(
                conn,
                [
                    (rtype, rid, patient, index_rows(services.registry, index_form(content)))
                    for rtype, rid, patient, content in batch
                ],
            )
        after = (batch[-1][0], batch[-1][1])
        done += len(batch)
        if progress is not None:
            progress(done)
