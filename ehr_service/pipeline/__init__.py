"""The one write pipeline (docs/architecture.md §11): every stored version, from single
writes, bundles, import, signed exchange and re-marking, is made here, and each
domain's concern (identity sealing, the recognition mark, consent refusals, the
exchange outbox, the patient-token reference rule, metrics) is a hook the
application registers where it is built (``ehr_service.hooks``)."""

from ehr_service.pipeline.core import WritePipeline, check_conformance, with_server_meta
from ehr_service.pipeline.draft import Deletion, Draft, Hook, Stage, WriteRequest

__all__ = [
    "Deletion",
    "Draft",
    "Hook",
    "Stage",
    "WritePipeline",
    "WriteRequest",
    "check_conformance",
    "with_server_meta",
]
