"""Where the data files shipped with the service live.

In a source checkout they are the top-level ``fhir_profiles/`` and
``migrations/`` folders; in an installed wheel they are bundled under
``ehr_service/_bundled/`` (see ``[tool.hatch.build]`` in pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    return _PACKAGE / "_bundled" / name
