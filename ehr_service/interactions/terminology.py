"""Terminology operations over the recognition catalogue (R4 §4.7.16-17, §4.9.18,
§4.10.13): ``CodeSystem/$lookup``, ``CodeSystem/$validate-code``,
``ValueSet/$expand``, ``ValueSet/$validate-code``, ``ConceptMap/$translate``.
Inputs come from the query (GET) or a Parameters body (POST); the catalogue's
own systems only: any other is a 404 naming it.

And publishing: the active edition's CodeSystem, ConceptMap and ValueSets as
FHIR resources, written through the pipeline in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.parameters import OperationInput
from ehr_service.interactions import update
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.recognition import terminology
from ehr_service.recognition.catalogue import Catalogue, parse_edition
from ehr_service.security.caller import SERVICE
from ehr_service.security.policy import require
from ehr_service.storage import resources


class Inputs:
    """An operation's named inputs: the query's, and a Parameters body's."""

    def __init__(self, query: dict[str, list[str]], body: Any, operation: str) -> None:
        self.query = query
        self.parameters = OperationInput(body, operation) if body is not None else None
        self.operation = operation

    def text(self, name: str) -> str | None:
        if self.parameters is not None:
            part = self.parameters.one(name)
            if part is not None:
                for key, value in part.items():
                    if key.startswith("value") and isinstance(value, str):
                        return value
                    if key == "valueCoding" and isinstance(value, dict):
                        return str(value.get("code")) if name == "code" else None
                raise FhirError.of(
                    Category.INCORRECT,
                    f"{self.operation}: '{name}' must be a string value",
                    code="invalid",
                    expression=[name],
                )
        values = self.query.get(name)
        return values[-1] if values else None

    def texts(self, name: str) -> list[str]:
        if self.parameters is not None:
            return [str(v) for p in self.parameters.all(name) for k, v in p.items()
                    if k.startswith("value")]  # fmt: skip
        return list(self.query.get(name, []))

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise FhirError.of(
                Category.INCORRECT,
                f"{self.operation} needs '{name}'",
                code="required",
                expression=[name],
            )
        return value

    def coding(self) -> tuple[str | None, str | None]:
        """(system, code) of a ``coding`` or ``codeableConcept`` input (its first
        coding), for operations that take one instead of system and code."""
        if self.parameters is None:
            return None, None
        for name, key in (("coding", "valueCoding"), ("codeableConcept", "valueCodeableConcept")):
            value = self.parameters.value(name, key.removeprefix("value"))
            if isinstance(value, dict):
                coding = (
                    value if key == "valueCoding" else next(iter(value.get("coding") or []), {})
                )
                if isinstance(coding, dict):
                    return coding.get("system"), coding.get("code")
        return None, None

    def number(self, name: str) -> int | None:
        if self.parameters is not None:
            part = self.parameters.one(name)
            if part is not None and "valueInteger" in part:
                value = part["valueInteger"]
                if type(value) is not int or value < 0:
                    raise FhirError.of(
                        Category.INCORRECT,
                        f"{self.operation}: '{name}' must be a non-negative integer",
                        code="value",
                        expression=[name],
                    )
                return value
        value = self.text(name)
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()) or len(value) > 9:
            raise FhirError.of(
                Category.INCORRECT,
                f"{self.operation}: '{name}' must be a non-negative integer",
                code="value",
                expression=[name],
            )
        return int(value)


def _catalogue(ctx: RequestContext) -> Catalogue:
    catalogue = ctx.services.catalogues.active() if ctx.services.catalogues else None
    if catalogue is None:
        raise FhirError.of(Category.NOT_FOUND, "No recognition catalogue is loaded")
    return catalogue


def _unknown(kind: str, url: str) -> FhirError:
    return FhirError.of(
        Category.NOT_FOUND,
        f"{kind} '{url[:200]}' is not known to this server",
        code="not-found",
    )


def _system(catalogue: Catalogue, inputs: Inputs, name: str = "system") -> str:
    system = inputs.text(name) or inputs.text("url") or catalogue.url
    if system != catalogue.url:
        raise _unknown("CodeSystem", system)
    return system


def lookup(ctx: RequestContext, body: Any) -> Result:
    require(ctx.caller, "CodeSystem", "r")
    inputs = Inputs(ctx.query, body, "$lookup")
    catalogue = _catalogue(ctx)
    coded_system, coded = inputs.coding()
    system = _system(catalogue, inputs) if coded_system is None else coded_system
    if system != catalogue.url:
        raise _unknown("CodeSystem", system)
    code = coded or inputs.required("code")
    found = terminology.lookup(catalogue, system, code, inputs.texts("property"))
    if found is None:
        raise FhirError.of(Category.NOT_FOUND, f"'{code[:64]}' is not an item of {system}")
    return Result(200, found)


def instance_url(conn: Connection, ctx: RequestContext, resource_type: str, rid: str) -> str:
    """The canonical url of a stored CodeSystem, ValueSet or ConceptMap: an operation
    invoked on the instance (``ValueSet/{id}/$validate-code``) works on it."""
    require(ctx.caller, resource_type, "r")
    stored = jsonio.loads(current_or_fail(conn, resource_type, rid, view=ctx.view).content or b"{}")
    url = stored.get("url")
    if not isinstance(url, str):
        raise _unknown(resource_type, f"{resource_type}/{rid}")
    return url


def validate_code(
    ctx: RequestContext, body: Any, resource_type: str, url: str | None = None
) -> Result:
    """``$validate-code`` of a CodeSystem or a ValueSet; ``url``: invoked on that one."""
    require(ctx.caller, resource_type, "r")
    inputs = Inputs(ctx.query, body, "$validate-code")
    catalogue = _catalogue(ctx)
    category = None
    coded_system, coded = inputs.coding()
    if resource_type == "ValueSet":
        url = (url or inputs.required("url")).split("|")[0]
        known, category = terminology.category_of_valueset(url)
        if not known:
            raise _unknown("ValueSet", url)
        system = coded_system or inputs.text("system") or catalogue.url
    elif url is not None:
        if url != catalogue.url:
            raise _unknown("CodeSystem", url)
        system = coded_system or url
    else:
        system = coded_system or _system(catalogue, inputs)
    code = coded or inputs.required("code")
    found = terminology.validate_code(catalogue, system, code, inputs.text("display"), category)
    return Result(200, found)


def expand(ctx: RequestContext, body: Any, url: str | None = None) -> Result:
    """``$expand`` of a catalogue value set; ``url``: invoked on that one."""
    require(ctx.caller, "ValueSet", "r")
    inputs = Inputs(ctx.query, body, "$expand")
    catalogue = _catalogue(ctx)
    url = (url or inputs.required("url")).split("|")[0]
    known, category = terminology.category_of_valueset(url)
    if not known:
        raise _unknown("ValueSet", url)
    expansion = terminology.expand(
        catalogue, category, inputs.text("filter"), inputs.number("count"),
        inputs.number("offset") or 0,
    )  # fmt: skip
    return Result(200, expansion)


def translate(ctx: RequestContext, body: Any, url: str | None = None) -> Result:
    """``$translate`` with the catalogue's ConceptMap; ``url``: invoked on that one."""
    require(ctx.caller, "ConceptMap", "r")
    inputs = Inputs(ctx.query, body, "$translate")
    catalogue = _catalogue(ctx)
    url = url or inputs.text("url")
    if url is not None and url.split("|")[0] != terminology.MAP_URL:
        raise _unknown("ConceptMap", url)
    coded_system, coded = inputs.coding()
    system = coded_system or inputs.required("system")
    code = coded or inputs.required("code")
    target = inputs.text("target") or inputs.text("targetsystem")
    if target is not None and target not in {catalogue.url, terminology.valueset_url(None)}:
        raise _unknown("target", target)
    return Result(200, terminology.translate(catalogue, system, code))


def publish(conn: Connection, ctx: RequestContext, document: Any) -> list[str]:
    """Store an edition's terminology as FHIR resources (CodeSystem, ConceptMaps and
    the ValueSets), retiring the CodeSystems and ConceptMaps of other editions;
    returns ``Type/id`` of what was written."""
    row, items, codes, published = parse_edition(document)
    catalogue = Catalogue.of(row, items, codes)
    wanted = [
        r for r in (*published, *terminology.valuesets(catalogue)) if isinstance(r.get("id"), str)
    ]
    keep = {(r["resourceType"], r["id"]) for r in wanted}
    written = []
    for resource_type, url in (("CodeSystem", row["url"]), ("ConceptMap", terminology.MAP_URL)):
        for resource_id, content in resources.live_by_url(conn, resource_type, url):
            stored = jsonio.loads(content)
            if (resource_type, resource_id) in keep or stored.get("status") == "retired":
                continue
            update.update(conn, ctx, resource_type, resource_id, {**stored, "status": "retired"})
            written.append(f"{resource_type}/{resource_id}")
    for resource in wanted:
        update.update(conn, ctx, resource["resourceType"], resource["id"], resource)
        written.append(f"{resource['resourceType']}/{resource['id']}")
    return written


def publish_if_absent(services: Services) -> bool:
    """First start (and a catalogue loaded before terminology was published): the
    active edition's terminology as FHIR resources, if its CodeSystem is not stored.
    True if it was written now."""
    catalogues = services.catalogues
    if catalogues is None or not catalogues.shipped.exists():
        return False
    catalogue = catalogues.active()
    document = jsonio.loads(catalogues.shipped.read_bytes())
    row = parse_edition(document)[0]
    if catalogue is None or catalogue.edition != row["edition"]:
        return False  # another edition is active: `catalogue load` published it
    ctx = RequestContext(services, services.settings.base_url or "urn:ehr-service", caller=SERVICE)
    with services.unit.read() as conn:  # every start: a read, no write lock
        if resources.live_by_url(conn, "CodeSystem", row["url"]):
            return False
    with services.unit.write() as conn:
        if resources.live_by_url(conn, "CodeSystem", row["url"]):  # another worker did
            return False
        publish(conn, ctx, document)
    return True
