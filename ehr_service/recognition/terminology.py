"""Value sets over the recognition catalogue, for profile validation: is a coding an
item (or mapped to an item) of the active edition, with these properties?"""

from __future__ import annotations

from ehr_service.fhir.profiles import Resolver
from ehr_service.recognition.catalogue import Catalogues


def catalogue_resolver(catalogues: Catalogues | None) -> Resolver:
    def resolve(
        vs_system: str, system: str, code: str, filters: tuple[tuple[str, str], ...]
    ) -> bool:
        catalogue = catalogues.active() if catalogues is not None else None
        if catalogue is None or vs_system != catalogue.url:
            return False
        item = catalogue.item_of_coding(system, code)
        if item is None:
            return False
        return all(name != "category" or item.category == value for name, value in filters)

    return resolve
