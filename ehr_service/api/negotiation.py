"""Content negotiation (R4 §3.1.0.1.6-8): ``Accept``, ``_format``, ``_pretty``,
``Content-Type`` of request bodies and ``Prefer``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.interactions.context import ReturnPreference

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir"}
XML_TYPES = frozenset({FHIR_XML, "application/xml", "text/xml", "application/xml+fhir"})
# Bodies that are FHIR resources: JSON or XML (XML is converted to JSON on the way in).
RESOURCE_TYPES = frozenset(JSON_TYPES | XML_TYPES)
_FORMATS = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    "application/json+fhir": FHIR_JSON,
    "application/json": "application/json",
    "xml": FHIR_XML,
    "text/xml": FHIR_XML,
    "application/xml": FHIR_XML,
    "application/xml+fhir": FHIR_XML,
    FHIR_XML: FHIR_XML,
}
_WILDCARDS = {"*/*", "application/*"}


@dataclass(frozen=True, slots=True)
class Rendering:
    media_type: str = FHIR_JSON
    pretty: bool = False

    @property
    def xml(self) -> bool:
        return self.media_type == FHIR_XML


DEFAULT_RENDERING = Rendering()


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """(media type, quality) of each range; a range asking for another FHIR version
    (``fhirVersion=3.0``) is one this server cannot give: quality 0."""
    ranges = []
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            elif key.lower() == "fhirversion" and not is_r4(value):
                quality = 0.0
        if media:
            ranges.append((media.strip().lower(), quality))
    return ranges


def is_r4(version: str) -> bool:
    """A ``fhirVersion`` media type parameter naming R4 (4.0, or a 4.0.x release)."""
    version = version.strip().strip('"')
    return version == "4.0" or version.startswith("4.0.")


def fhir_version_of(raw: str) -> str | None:
    for param in raw.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "fhirversion":
            return value.strip().strip('"')
    return None


# Bulk Data downloads (FHIR Bulk Data v2): what a client may ask a file for.
NDJSON_TYPES = frozenset({"application/fhir+ndjson", "application/ndjson"})


def _body_media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_xml_body(request: Request) -> bool:
    return _body_media(request) in XML_TYPES


def _from_accept(request: Request, accept: str, pretty: bool) -> Rendering | None:
    """The best accepted representation: the highest quality wins, JSON on a tie
    (and for wildcards, unless the request body itself is XML)."""
    best: tuple[float, int, str] | None = None
    for media, quality in _media_ranges(accept):
        if quality <= 0:
            continue
        if media in {FHIR_JSON, "application/json+fhir"}:
            candidate = (quality, 3, FHIR_JSON)
        elif media in XML_TYPES:
            candidate = (quality, 2, FHIR_XML)
        elif media in _WILDCARDS:
            candidate = (quality, 1, FHIR_XML if is_xml_body(request) else FHIR_JSON)
        elif media in NDJSON_TYPES and "/$export-file/" in request.url.path:
            candidate = (quality, 1, FHIR_JSON)  # the file is NDJSON; an error JSON
        elif media == "application/json":
            candidate = (quality, 0, "application/json")
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return Rendering(best[2], pretty) if best is not None else None


def negotiate(request: Request) -> Rendering:
    """The representation to answer with (``_format`` first, then ``Accept``, then
    the body's own format), or 406 if the client takes neither JSON nor XML."""
    pretty_raw = request.query_params.get("_pretty", "false").lower()
    if pretty_raw not in {"true", "false"}:
        raise FhirError.of(
            Category.INCORRECT,
            "_pretty must be true or false",
            code="value",
            expression=["_pretty"],
        )
    pretty = pretty_raw == "true"
    requested = request.query_params.get("_format")
    if requested is not None:
        fmt = requested.strip().lower().split(";")[0]
        if fmt in _FORMATS:
            return Rendering(_FORMATS[fmt], pretty)
        raise FhirError.of(
            Category.NOT_ACCEPTABLE,
            f"_format '{requested[:40]}' is not served; this server speaks FHIR JSON and XML",
        )
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return Rendering(FHIR_XML if is_xml_body(request) else FHIR_JSON, pretty)
    chosen = _from_accept(request, accept, pretty)
    if chosen is not None:
        return chosen
    raise FhirError.of(
        Category.NOT_ACCEPTABLE,
        f"The Accept header excludes FHIR R4 JSON and XML; this server speaks FHIR R4 "
        f"(4.0.1) as {FHIR_JSON} or {FHIR_XML}",
    )


def check_content_type(request: Request, allowed: frozenset[str]) -> None:
    """415 unless the body is one of ``allowed`` (a missing type is taken as JSON)."""
    raw = request.headers.get("content-type")
    if raw is None:
        return
    media = raw.split(";")[0].strip().lower()
    version = fhir_version_of(raw)
    if version is not None and not is_r4(version):
        raise FhirError.of(
            Category.UNSUPPORTED_MEDIA_TYPE,
            f"fhirVersion={version[:20]}: this server takes FHIR R4 (4.0) content only",
        )
    if media in allowed:
        return
    hint = " (XML is taken for FHIR resources only)" if "xml" in media else ""
    raise FhirError.of(
        Category.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type '{raw[:60]}' is not accepted here{hint}; send one of: "
        + ", ".join(sorted(allowed)),
    )


def return_preference(request: Request) -> ReturnPreference:
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == "return":
                try:
                    return ReturnPreference(value.strip().strip('"'))
                except ValueError:
                    continue
    return ReturnPreference.REPRESENTATION


def strict_handling(request: Request) -> bool:
    """``Prefer: handling=strict``: unknown search parameters are errors (R4 §3.1.1.3)."""
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == "handling" and value.strip().lower() == "strict":
                return True
    return False
