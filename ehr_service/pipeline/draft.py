"""What flows through the write pipeline: the request a version is written for,
the version being made (a :class:`Draft`), and the hooks that act on it.

Stages, in order, for a version with content:

1. ``RESOURCE``: the stored JSON may still change (server-set tags such as the
   recognition mark) or cause other writes (an institution's results re-marked);
2. ``SEAL``: one hook turns the JSON into stored bytes and index rows (identity
   sealing: ID numbers indexed by blind token, stored sealed); without it, the
   JSON is stored as it is;
3. ``OWNER``: the record the version belongs to is known; checks that may refuse
   the write (a patient token's own record only, its references);
4. ``VERSION``: what is stored beside the version (consent refusals, the exchange
   outbox) and who wants to know (metrics).

A deletion has one stage, ``DELETE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.compartment import EVERYTHING, Visibility
from ehr_service.fhir.errors import Issue
from ehr_service.fhir.search.values import IndexRows
from ehr_service.storage.identity import IdNumberClaim


class Stage(IntEnum):
    RESOURCE = 1
    SEAL = 2
    OWNER = 3
    VERSION = 4
    DELETE = 5


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Who a version is written for, as far as the pipeline needs to know."""

    base_url: str
    view: Visibility = EVERYTHING  # what the writer may see (a patient token: one record)
    from_partner: str | None = None  # written by a signed exchange from this partner
    request_id: str = "-"


@dataclass(slots=True)
class Draft:
    """One version being made; hooks read and fill it in stage order."""

    conn: Connection
    request: WriteRequest
    resource_type: str
    resource_id: str
    version_id: int
    now: datetime
    method: str
    resource: dict[str, Any]  # the stored JSON (server meta set)
    previous: dict[str, Any] | None  # the stored JSON of the version this one follows
    index_of: Callable[[dict[str, Any]], IndexRows]  # index rows of a resource form
    content: bytes | None = None  # set at SEAL
    index: IndexRows | None = None
    id_number: str | None = None  # a Patient's own ID number, as its blind token
    id_number_claims: tuple[IdNumberClaim, ...] = ()  # and its claims, a token per scheme
    warnings: list[Issue] = field(default_factory=list)
    owner: str | None = None  # set before OWNER: the compartment patient id
    patients: tuple[str, ...] = ()  # every Patient compartment the version is in
    consent: tuple[str | None, tuple[str, ...]] | None = None  # set at VERSION
    outbox: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Deletion:
    """A version that deletes a resource."""

    conn: Connection
    request: WriteRequest
    resource_type: str
    resource_id: str
    owner: str | None


@dataclass(frozen=True, slots=True)
class Hook:
    """``run`` at ``stage`` for versions of ``types`` (None: every type)."""

    name: str
    stage: Stage
    run: Callable[[Any], None]  # a Draft, or a Deletion at Stage.DELETE
    types: frozenset[str] | None = None

    def applies_to(self, resource_type: str) -> bool:
        return self.types is None or resource_type in self.types
