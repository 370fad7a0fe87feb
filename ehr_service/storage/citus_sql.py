"""SQL shapes of the Citus layout (storage.citus, docs/scale.md) that the search
compiler and the search queries share: the sentinel of resources outside any
record, subqueries correlated on the distribution column, and the records a
search's criteria pin it to. Outside the Citus layout each gives the plain form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, tuple_

from ehr_service.fhir.compartment import PatientCompartment
from ehr_service.fhir.references import parse_reference
from ehr_service.fhir.search.query import Criterion
from ehr_service.storage import citus
from ehr_service.storage.tables import resource


def unowned(column: Any) -> ColumnElement[bool]:
    """The row belongs to no record (on the Citus layout: the sentinel owner)."""
    if citus.active():
        return column == citus.UNOWNED  # type: ignore[no-any-return]
    return column.is_(None)  # type: ignore[no-any-return]


def owned(column: Any) -> ColumnElement[bool]:
    """The row belongs to some record."""
    if citus.active():
        return column != citus.UNOWNED  # type: ignore[no-any-return]
    return column.is_not(None)  # type: ignore[no-any-return]


def same_record(table: Any, other: Any) -> list[ColumnElement[bool]]:
    """On the Citus layout, the correlation of two co-located tables' rows on the
    distribution column, so that the subquery runs on the shard of the outer row."""
    if citus.active():
        return [table.c.compartment_patient_id == other.c.compartment_patient_id]
    return []


def key_columns(table: Any) -> tuple[Any, ...]:
    """What a subquery of matching resources selects: the id, and on the Citus
    layout the record first (see ``in_keys``)."""
    if citus.active():
        return (table.c.compartment_patient_id, table.c.res_id)
    return (table.c.res_id,)


def in_keys(statement: Any) -> ColumnElement[bool]:
    """``resource`` rows among a subquery of ``key_columns``: on the Citus layout
    joined on the distribution column, so it pushes down to each shard whole."""
    if citus.active():
        return tuple_(resource.c.compartment_patient_id, resource.c.res_id).in_(statement)
    return resource.c.res_id.in_(statement)


def pinned_owners(
    compartment: PatientCompartment,
    base_url: str,
    resource_type: str,
    criteria: Sequence[Criterion],
) -> set[str] | None:
    """The records every match must be in, when a criterion says so (``subject=
    Patient/X`` where the subject decides the owner, or a Patient's ``_id``): on
    the Citus layout the search then runs on those records' shards only."""
    for criterion in criteria:
        parameter = criterion.parameter
        if (
            resource_type == "Patient"
            and parameter.code == "_id"
            and criterion.modifier is None
            and not criterion.chain
        ):  # a Patient is its own record (``|x`` is x; ``s|x`` matches no id)
            return {v.removeprefix("|") for v in criterion.values if "|" not in v[1:]}
        if (
            parameter.type != "reference"
            or criterion.chain
            or criterion.modifier not in (None, "Patient")
            or not compartment.pins_owner(resource_type, parameter.expression)
        ):
            continue
        owners = set()
        for value in criterion.values:
            if value.startswith(base_url + "/"):
                value = value[len(base_url) + 1 :]
            parsed = parse_reference(value)
            if parsed is not None and parsed.base is None:
                if parsed.resource_type != "Patient":
                    break
                owners.add(parsed.resource_id)
            elif (
                "/" not in value
                and ":" not in value
                and (criterion.modifier == "Patient" or parameter.targets == ("Patient",))
            ):
                owners.add(value)
            else:
                break
        else:
            return owners
    return None
