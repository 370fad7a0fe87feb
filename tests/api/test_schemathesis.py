"""Property-based requests from the OpenAPI document: no 500s, only documented statuses."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from ehr_service.app import create_app
from ehr_service.config import PROJECT_ROOT, Settings
from ehr_service.storage.database import Database
from ehr_service.storage.migrate import upgrade
from tests.conftest import TEMP_DIRS
from tests.helpers import bearer

_DATA = Path(tempfile.mkdtemp(prefix="ehr-schemathesis-"))
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)  # nothing left in /tmp
TEMP_DIRS.append(_DATA)  # xdist workers skip atexit: removed at session end too
_SETTINGS = Settings(
    database_url=f"sqlite:///{_DATA / 'ehr.sqlite3'}",
    data_dir=_DATA,
    environment="test",
    demo_data=True,
)
_database = Database(_SETTINGS.effective_database_url)
upgrade(_database, PROJECT_ROOT / "migrations")
_database.dispose()

app = create_app(_SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.auth()
class _Bearer:
    """A valid token on every request (bad tokens have their own tests)."""

    def get(self, case: schemathesis.Case, context: object) -> str:
        return bearer(_SETTINGS)["Authorization"]

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case: schemathesis.Case) -> None:
    # A JSON schema cannot say which FHIR resources are valid, so a schema-valid
    # body may rightly get a 400: positive_data_acceptance does not apply.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
