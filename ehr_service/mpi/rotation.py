"""Re-sealing and re-tokenising stored ID numbers (``ehr-service keys rotate-data-key``,
docs/architecture.md §6): after a new data key, or a new cryptographic suite.

For every stored row holding a sealed number (current rows and history), one
transaction per batch:

- a seal made by another key than the active one is sealed again by it (so AES-256-GCM
  seals become SM4-GCM ones when the national suite's key is active, and back);
- on current rows, index rows holding the number's blind token of another scheme
  get the suite's token (history has no index rows);
- a live Patient's uniqueness claims become those of the suite (``claims_of``).

Under the national suite the HMAC-SHA-256 claims of Patients that now claim under
HMAC-SM3 are then dropped. Safe to re-run; a write meanwhile waits for its row
(PostgreSQL: the batch locks it) or is seen by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ehr_service.fhir.errors import FhirError
from ehr_service.mpi.protection import SEALED_URL, IdNumberProtection
from ehr_service.storage import identity as identity_store
from ehr_service.storage.unit_of_work import UnitOfWork


@dataclass(slots=True)
class Rotation:
    resealed: int = 0  # stored versions sealed again
    retokened: int = 0  # index rows given the suite's blind token
    claimed: int = 0  # Patients whose claims were brought in step
    dropped: int = 0  # claims of a scheme the suite has left
    conflicts: tuple[str, ...] = ()  # Patients whose number another record claims


def rotate_stored(unit: UnitOfWork, protection: IdNumberProtection, batch: int = 500) -> Rotation:
    marker = SEALED_URL.encode()
    done = Rotation()
    conflicts: list[str] = []
    for versions in (False, True):
        after: tuple[str, ...] | None = None
        while True:
            with unit.write() as conn:
                rows = identity_store.sealed_batch(conn, marker, after, batch, versions=versions)
                for key, content in rows:
                    new_content = protection.reseal(content)
                    if new_content is not None:
                        identity_store.replace_sealed(conn, key, new_content, versions=versions)
                        done.resealed += 1
                    if versions:
                        continue
                    numbers, own = protection.numbers_in(new_content or content)
                    resource_type, resource_id = key[-2:]  # the record leads it on Citus
                    done.retokened += identity_store.retoken(
                        conn, resource_type, resource_id, protection.retokens(numbers)
                    )
                    if own is None or not identity_store.holds_number(conn, resource_id):
                        continue  # no number, or a deleted record (its number is free)
                    try:
                        identity_store.hold_id_number(conn, resource_id, protection.claims_of(own))
                        done.claimed += 1
                    except FhirError:
                        conflicts.append(resource_id)
            if len(rows) < batch:
                break
            after = rows[-1][0]
    if not protection.suite.claims_every_scheme:
        with unit.write() as conn:
            for scheme in protection.suite.other_schemes():
                done.dropped += identity_store.drop_claims_of_scheme(
                    conn, scheme, protection.suite.blind_scheme
                )
    done.conflicts = tuple(conflicts)
    return done
