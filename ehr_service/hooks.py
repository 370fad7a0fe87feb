"""The write pipeline as this application builds it (docs/architecture.md §11): each
domain's hooks, registered in the order they run. The one place that knows
every domain; the domains do not know one another.

| stage | hook | domain |
|---|---|---|
| RESOURCE | institution-master-data, institution-cache, institution-remark, | recognition |
|  | recognition-mark | |
| SEAL | resident-identity | mpi |
| OWNER | own-record-only | security |
| VERSION | consent-refusals | security |
| VERSION | exchange-outbox | exchange |
| VERSION | metrics | interactions |
| DELETE | institution-cache | recognition |
"""

from __future__ import annotations

from ehr_service.config import Settings
from ehr_service.exchange.sharing import outbox_hook
from ehr_service.fhir.compartment import PatientCompartment
from ehr_service.fhir.profiles import Conformance
from ehr_service.fhir.search.registry import SearchParameterRegistry
from ehr_service.interactions.context import WriteListeners
from ehr_service.mpi import hooks as identity_hooks
from ehr_service.mpi.identity import ResidentIdentity
from ehr_service.pipeline import Draft, Hook, Stage, WritePipeline
from ehr_service.recognition import hooks as recognition_hooks
from ehr_service.recognition.catalogue import Catalogues
from ehr_service.recognition.remarking import Remarker
from ehr_service.recognition.terminology import catalogue_resolver
from ehr_service.security import hooks as security_hooks


def build_pipeline(
    settings: Settings,
    registry: SearchParameterRegistry,
    compartment: PatientCompartment,
    conformance: Conformance | None,
    identity: ResidentIdentity,
    catalogues: Catalogues | None,
    writes: WriteListeners,
) -> tuple[WritePipeline, Remarker | None]:
    pipeline = WritePipeline(registry, compartment, conformance, catalogue_resolver(catalogues))
    remarker = (
        Remarker(pipeline, identity.protection, catalogues, settings.recognition_mark)
        if catalogues is not None
        else None
    )

    def count(draft: Draft) -> None:
        writes.written(draft.resource_type)

    pipeline.register(
        *recognition_hooks.hooks(
            catalogues,
            settings.recognition_mark,
            remarker,
            regions=(settings.region, *settings.regions),
        ),
        identity_hooks.sealing(identity),
        *security_hooks.hooks(),
        outbox_hook(settings.sharing_policy),
        Hook("metrics", Stage.VERSION, count),
    )
    return pipeline, remarker
