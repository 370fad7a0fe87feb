"""The ceiling of a read: the same framework (FastAPI on uvicorn) and the same
engine set-up doing the same primary-key query as a FHIR read, and nothing else
(no token, no consent check, no audit, no metrics). ``make bench`` runs it on the
database the service was benchmarked on: ``EHR_DATABASE_URL``. On the Citus layout
a read is what the service sends there: the id's claim, then the row on its
record's shard."""

from __future__ import annotations

import os

from fastapi import FastAPI, Response
from sqlalchemy import select

from ehr_service.storage import citus, claims
from ehr_service.storage.database import Database
from ehr_service.storage.tables import resource

database = Database(os.environ["EHR_DATABASE_URL"])
app = FastAPI()


@app.get("/bare/{resource_type}/{resource_id}")
def read(resource_type: str, resource_id: str) -> Response:
    with database.transaction(write=False) as conn:
        conditions = [resource.c.res_type == resource_type, resource.c.res_id == resource_id]
        if citus.active():
            owner = claims.owner(conn, resource_type, resource_id)
            if owner is None:
                return Response(status_code=404)
            conditions.append(resource.c.compartment_patient_id == owner)
        content = conn.execute(select(resource.c.content).where(*conditions)).scalar_one_or_none()
    if content is None:
        return Response(status_code=404)
    return Response(bytes(content), media_type="application/fhir+json")
