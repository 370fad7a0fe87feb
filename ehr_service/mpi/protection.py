"""Resident ID numbers never rest in plaintext (docs/architecture.md §6).

On every write, each Identifier whose system is the resident ID number system, or
whose value is a valid 18-character resident ID number under any system, is

- validated (GB 11643; an invalid number under the ID system is a 422),
- indexed as a **blind token** (keyed HMAC of the normalised number: HMAC-SHA-256,
  or HMAC-SM3 in the national suite, ``blind:sm3:...``), so
  ``identifier=<system>|<number>`` still finds it (under either scheme, the
  current one first) and a unique constraint can hold one resident per number
  (claimed under every scheme a writer may use: ``storage.identity``),
- stored **masked** (``5001**********123X``) with the number **sealed** (AES-GCM,
  or SM4-GCM in the national suite) in an extension beside it.

Any other ID number found in free text (narrative, notes) is masked, with a
warning. On the way out, :meth:`IdNumberProtection.present` opens the seals for
callers allowed to see ID numbers and drops them for everyone else, so stored
JSON is still served without a model round trip and no response path can forget.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.mpi.idnumber import (
    CANDIDATE,
    ID_NUMBER_SYSTEM,
    IdNumber,
    InvalidIdNumberError,
    is_masked,
    mask,
    parse_id_number,
)
from ehr_service.security.ciphers import HMAC_SHA256, SUITES, CryptoSuite
from ehr_service.security.fieldcrypto import Keyring, SealError
from ehr_service.storage.identity import IdNumberClaim

SEALED_URL = "urn:ehr-service:extension:sealed-id-number"
_SEALED_MARKER = SEALED_URL.encode()
BLIND_PREFIX = "blind:"
# The tokens of a scheme (HMAC-SHA-256 ones keep the form of every earlier release).
_TOKEN_PREFIX = {HMAC_SHA256: BLIND_PREFIX}
_DIGEST_PREFIX = {HMAC_SHA256: "hmac:"}
_PURPOSE = "resident-id-number"

logger = logging.getLogger(__name__)


def _is_identifier(node: dict[str, Any]) -> bool:
    return isinstance(node.get("value"), str) and "code" not in node


def _walk_identifiers(
    node: Any, path: str, out: list[tuple[dict[str, Any], str]]
) -> list[tuple[dict[str, Any], str]]:
    """Every Identifier-shaped dict (and its FHIRPath-like location)."""
    if isinstance(node, dict):
        if _is_identifier(node):
            out.append((node, path))
        for key, value in node.items():
            if isinstance(value, dict | list):
                _walk_identifiers(value, f"{path}.{key}", out)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                _walk_identifiers(item, f"{path}[{index}]", out)
    return out


def _without_seal(node: dict[str, Any]) -> None:
    extensions = node.get("extension")
    if isinstance(extensions, list):
        kept = [e for e in extensions if not (isinstance(e, dict) and e.get("url") == SEALED_URL)]
        if len(kept) != len(extensions):
            if kept:
                node["extension"] = kept
            else:
                del node["extension"]


def _seal_of(node: dict[str, Any]) -> str | None:
    for extension in node.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == SEALED_URL:
            sealed = extension.get("valueString")
            return sealed if isinstance(sealed, str) else None
    return None


def is_sealed(node: Any) -> bool:
    """Does this element carry a sealed ID number?"""
    return isinstance(node, dict) and _seal_of(node) is not None


def record_of(resource: dict[str, Any]) -> str:
    """The associated data that binds a seal to its record."""
    return f"{resource.get('resourceType')}/{resource.get('id')}"


@dataclass(slots=True)
class ProtectedValue:
    node: dict[str, Any]
    written: str  # exactly as the client wrote it
    number: IdNumber
    blind: str


@dataclass(slots=True)
class Prepared:
    """The protected values of one resource version, switchable between forms."""

    resource: dict[str, Any]
    values: list[ProtectedValue]
    warnings: list[Issue] = field(default_factory=list)
    unique_key: str | None = None  # the blind token of a Patient's own ID number
    claims: tuple[IdNumberClaim, ...] = ()  # and its uniqueness claims, per scheme

    def index_form(self) -> None:
        for value in self.values:
            _without_seal(value.node)
            value.node["value"] = value.blind

    def stored_form(self, seal: Callable[[str, str], str]) -> None:
        record = record_of(self.resource)
        for value in self.values:
            value.node["value"] = mask(value.written)
            extensions = [
                e for e in value.node.get("extension") or () if e.get("url") != SEALED_URL
            ]
            extensions.append({"url": SEALED_URL, "valueString": seal(value.written, record)})
            value.node["extension"] = extensions


def _strings(node: Any) -> Iterator[tuple[Any, Any, str]]:
    """(container, key, text) of every string, for in-place masking."""
    if isinstance(node, dict):
        if node.get("url") == SEALED_URL:
            return
        for key, value in node.items():
            if isinstance(value, str):
                yield node, key, value
            elif isinstance(value, dict | list):
                yield from _strings(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                yield node, index, value
            elif isinstance(value, dict | list):
                yield from _strings(value)


def _valid_candidate(match: str) -> bool:
    if len(match) != 18:
        return False  # 15-digit runs are too often something else (IMEI, accession)
    try:
        parse_id_number(match)
    except InvalidIdNumberError:
        return False
    return True


class IdNumberProtection:
    """Blind tokens, seals and masks of resident ID numbers, with one keyring."""

    def __init__(self, keyring: Keyring, suite: CryptoSuite = SUITES["international"]) -> None:
        self.keyring = keyring
        self.suite = suite

    # -- tokens -------------------------------------------------------------------------
    def blind_token(self, normalised: str, scheme: str | None = None) -> str:
        """The token of a number under ``scheme`` (default: the suite's)."""
        scheme = scheme or self.suite.blind_scheme
        prefix = _TOKEN_PREFIX.get(scheme, f"{BLIND_PREFIX}{scheme.removeprefix('hmac-')}:")
        return prefix + self.keyring.blind(_PURPOSE, normalised, scheme)

    def blind_tokens(self, normalised: str) -> tuple[str, ...]:
        """The number's tokens under every scheme, the suite's first (lookups while a
        deployment moves between suites find either)."""
        schemes = (self.suite.blind_scheme, *self.suite.other_schemes())
        return tuple(self.blind_token(normalised, s) for s in schemes)

    def claims_of(self, normalised: str) -> tuple[IdNumberClaim, ...]:
        """The uniqueness claims a Patient with this number holds: under the suite's
        scheme, and under the others always (international, both) or while claims of
        them remain (national)."""
        own = IdNumberClaim(self.suite.blind_scheme, self.blind_token(normalised))
        others = tuple(
            IdNumberClaim(s, self.blind_token(normalised, s), self.suite.claims_every_scheme)
            for s in self.suite.other_schemes()
        )
        return (own, *others)

    def search_code(self, system: str | None, code: str) -> tuple[str, ...] | None:
        """The blind tokens a token search must look for instead of ``code`` (one per
        scheme); None when ``code`` is not an ID number (so is stored as written)."""
        if not code:
            return None  # system| : any value of the system
        try:
            number = parse_id_number(code)
        except InvalidIdNumberError:
            if system == ID_NUMBER_SYSTEM:  # matches nothing, and says nothing
                return (self.blind_token(code.upper()),)
            return None
        if number.legacy and system != ID_NUMBER_SYSTEM:
            return None  # 15 digits under another system: not protected on write either
        return self.blind_tokens(number.normalised)

    def keyed_digest(self, text: str) -> str:
        """A keyed digest of text that may hold an ID number (e.g. conditional criteria)."""
        scheme = self.suite.blind_scheme
        prefix = _DIGEST_PREFIX.get(scheme, f"{scheme}:")
        return prefix + self.keyring.blind("criteria", text, scheme)

    # -- writes -------------------------------------------------------------------------
    def prepare(self, resource: dict[str, Any], previous: dict[str, Any] | None) -> Prepared:
        """Find, check and tokenise the ID numbers of a resource about to be stored.

        ``previous`` is the stored form of the version before: a masked value sent
        back unchanged (by a caller who only ever saw the mask) keeps its number.
        """
        resource_type = str(resource.get("resourceType"))
        if _SEALED_MARKER in jsonio.dumps(resource):
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"The extension {SEALED_URL} is reserved to this server",
                code="business-rule",
            )
        known = self._masked_values(previous, resource_type) if previous is not None else {}
        errors: list[Issue] = []
        values: list[ProtectedValue] = []
        for node, path in _walk_identifiers(resource, resource_type, []):
            written = node["value"]
            under_system = node.get("system") == ID_NUMBER_SYSTEM
            if is_masked(written):
                # the same place first; else a mask that stands for one number only
                same_place = known.get((path, written))
                elsewhere = {v for (_, m), v in known.items() if m == written}
                restored = same_place or (elsewhere.pop() if len(elsewhere) == 1 else None)
                if restored is None:
                    if under_system:
                        errors.append(
                            Issue(
                                f"{path}: a masked ID number can only be sent back unchanged; "
                                "send the full number to change it",
                                "value",
                                expression=(f"{path}.value",),
                            )
                        )
                    continue
                written = restored
            try:
                number = parse_id_number(written)
            except InvalidIdNumberError as exc:
                if under_system:
                    errors.append(
                        Issue(
                            f"{path}: not a valid resident ID number: {exc}",
                            "value",
                            expression=(f"{path}.value",),
                        )
                    )
                continue
            if not under_system and number.legacy:
                continue
            values.append(
                ProtectedValue(node, written, number, self.blind_token(number.normalised))
            )
        if errors:
            raise FhirError(Category.UNPROCESSABLE, tuple(errors))
        prepared = Prepared(resource, values)
        if resource_type == "Patient":
            self._check_patient(prepared)
        return prepared

    def _check_patient(self, prepared: Prepared) -> None:
        resource = prepared.resource
        own = [
            v
            for v in prepared.values
            if v.node.get("system") == ID_NUMBER_SYSTEM
            and any(v.node is i for i in resource.get("identifier") or ())
        ]
        distinct = {v.number.normalised for v in own}
        if len(distinct) > 1:
            raise FhirError.of(
                Category.UNPROCESSABLE,
                "A Patient holds one resident ID number; these identifiers carry different ones",
                code="business-rule",
                expression=["Patient.identifier"],
            )
        if not own:
            return
        number = own[0].number
        prepared.unique_key = own[0].blind
        prepared.claims = self.claims_of(number.normalised)
        if number.legacy:
            prepared.warnings.append(
                Issue(
                    "A 15-digit legacy ID number was upgraded to 18 digits for matching",
                    "informational",
                    "information",
                    ("Patient.identifier",),
                )
            )
        birth_date = resource.get("birthDate")
        if (
            isinstance(birth_date, str)
            and birth_date != number.birth_date.isoformat()[: len(birth_date)]
        ):
            prepared.warnings.append(
                Issue(
                    "The birth date in the ID number differs from birthDate",
                    "business-rule",
                    "warning",
                    ("Patient.birthDate",),
                )
            )
        gender = resource.get("gender")
        if gender in {"male", "female"} and gender != number.sex:
            prepared.warnings.append(
                Issue(
                    "The sex digit of the ID number differs from gender",
                    "business-rule",
                    "warning",
                    ("Patient.gender",),
                )
            )

    def seal(self, plaintext: str, record: str) -> str:
        return self.keyring.seal(plaintext, record)

    def mask_free_text(
        self,
        resource: dict[str, Any],
        protected: Sequence[ProtectedValue] = (),
    ) -> bool:
        """Mask valid ID numbers outside protected identifiers; True if any was."""
        own = {v.written for v in protected}
        changed = False
        protected_nodes = {id(v.node) for v in protected}
        for container, key, text in list(_strings(resource)):
            if key == "value" and id(container) in protected_nodes:
                continue
            if not CANDIDATE.search(text):
                continue
            masked = CANDIDATE.sub(
                lambda m: (
                    mask(m.group(0))
                    if _valid_candidate(m.group(0)) or m.group(0) in own
                    else m.group(0)
                ),
                text,
            )
            if masked != text:
                container[key] = masked
                changed = True
        return changed

    @staticmethod
    def has_free_text_number(content: bytes, protected: Sequence[ProtectedValue] = ()) -> bool:
        """Is there an ID number in stored content outside its seal: any valid
        18-character one, or a copy of one of this resource's own (15 digits too)?"""
        if any(v.written.encode() in content for v in protected if len(v.written) == 15):
            return True
        if _DIGIT_RUN.search(content) is None:  # every candidate holds 15 digits in a row
            return False
        return any(
            _valid_candidate(m.group(0).decode()) for m in _BYTES_CANDIDATE.finditer(content)
        )

    # -- reads --------------------------------------------------------------------------
    def _masked_values(
        self, resource: dict[str, Any], resource_type: str
    ) -> dict[tuple[str, str], str]:
        """(location, mask) -> number, of the sealed values of a stored resource."""
        record = record_of(resource)
        out: dict[tuple[str, str], str] = {}
        for node, path in _walk_identifiers(resource, resource_type, []):
            sealed = _seal_of(node)
            if sealed is None:
                continue
            try:
                out[(path, node["value"])] = self.keyring.open(sealed, record)
            except SealError:
                continue
        return out

    def index_form(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A stored resource as the indexer saw it when it was written: every sealed
        ID number replaced by its blind token (in place)."""
        self.reveal(resource)
        for node, _ in _walk_identifiers(resource, "", []):
            if node.get("value") is None:
                continue
            try:
                number = parse_id_number(node["value"])
            except InvalidIdNumberError:
                continue
            if not number.legacy or node.get("system") == ID_NUMBER_SYSTEM:
                node["value"] = self.blind_token(number.normalised)
        return resource

    def numbers_in(self, content: bytes) -> tuple[set[str], str | None]:
        """(normalised ID numbers sealed in stored content, a Patient's own one)."""
        document = self.reveal(jsonio.loads(content))
        numbers: set[str] = set()
        for node, _ in _walk_identifiers(document, "", []):
            try:
                number = parse_id_number(node["value"])
            except InvalidIdNumberError:
                continue
            if not number.legacy or node.get("system") == ID_NUMBER_SYSTEM:
                numbers.add(number.normalised)
        own = None
        if document.get("resourceType") == "Patient":
            for identifier in document.get("identifier") or ():
                if isinstance(identifier, dict) and identifier.get("system") == ID_NUMBER_SYSTEM:
                    try:
                        own = parse_id_number(str(identifier.get("value"))).normalised
                    except InvalidIdNumberError:
                        continue
                    break
        return numbers, own

    def retokens(self, numbers: set[str]) -> dict[str, str]:
        """Old blind token -> the suite's, for these numbers (a scheme change)."""
        out: dict[str, str] = {}
        for number in numbers:
            current = self.blind_token(number)
            for scheme in self.suite.other_schemes():
                out[self.blind_token(number, scheme)] = current
        return out

    def reveal(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource as its writer sent it: seals opened and removed, in place."""
        self._present_node(resource, (), reveal=True)
        return resource

    def present(self, body: bytes, *, reveal: bool) -> bytes:
        """Response bytes for a caller: seals opened (``reveal``) or dropped."""
        if _SEALED_MARKER not in body:
            return body
        document = jsonio.loads(body)
        self._present_node(document, (), reveal=reveal)
        return jsonio.dumps(document)

    def present_json(self, document: Any, *, reveal: bool) -> Any:
        self._present_node(document, (), reveal=reveal)
        return document

    def reseal(self, content: bytes) -> bytes | None:
        """Stored content with every seal made by an older data key sealed again by
        the active one; None when nothing needed it."""
        if _SEALED_MARKER not in content:
            return None
        document = jsonio.loads(content)
        active = self.keyring.active.kid
        changed = self._reseal_node(document, (), active)
        return jsonio.dumps(document) if changed else None

    def _reseal_node(self, node: Any, records: tuple[str, ...], active: str) -> int:
        changed = 0
        if isinstance(node, dict):
            if isinstance(node.get("resourceType"), str) and isinstance(node.get("id"), str):
                records = (*records, record_of(node))
            for extension in node.get("extension") or ():
                if not (isinstance(extension, dict) and extension.get("url") == SEALED_URL):
                    continue
                sealed = str(extension.get("valueString"))
                if self.keyring.key_id_of(sealed) == active:
                    continue
                for record in reversed(records):
                    try:
                        plaintext = self.keyring.open(sealed, record)
                    except SealError:
                        continue
                    extension["valueString"] = self.keyring.seal(plaintext, record)
                    changed += 1
                    break
            for value in node.values():
                if isinstance(value, dict | list):
                    changed += self._reseal_node(value, records, active)
        elif isinstance(node, list):
            for item in node:
                changed += self._reseal_node(item, records, active)
        return changed

    def _present_node(self, node: Any, records: tuple[str, ...], *, reveal: bool) -> None:
        """Walk a response; ``records`` are the enclosing resources, innermost last
        (a seal is bound to the resource it was written in)."""
        if isinstance(node, dict):
            if isinstance(node.get("resourceType"), str) and isinstance(node.get("id"), str):
                records = (*records, record_of(node))
            sealed = _seal_of(node) if "extension" in node else None
            if sealed is not None:
                _without_seal(node)
                if reveal:
                    self._open_into(node, sealed, records)
            for value in node.values():
                if isinstance(value, dict | list):
                    self._present_node(value, records, reveal=reveal)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, dict | list):
                    self._present_node(item, records, reveal=reveal)

    def _open_into(self, node: dict[str, Any], sealed: str, records: tuple[str, ...]) -> None:
        for record in reversed(records):  # contained resources: their container's seal
            try:
                node["value"] = self.keyring.open(sealed, record)
                return
            except SealError:
                continue
        logger.warning("a sealed ID number could not be opened; it stays masked")


_BYTES_CANDIDATE = re.compile(CANDIDATE.pattern.encode())
_DIGIT_RUN = re.compile(rb"[0-9]{15}")  # a third of the candidate scan's cost
