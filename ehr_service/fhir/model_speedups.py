"""A start-up patch of ``fhir_core`` (the base of the fhir.resources models).

Its before-validator ``reject_null_complex_elements`` runs for every element of
every resource and, each time, walks all fields of the element's class to find
the lists of complex types. That walk was a third of validation time on the
Synthea records. The patch finds those lists once per class; the check itself
stays fhir_core's: when a list holds a null, the original function runs and
reports it, so results and messages are the same as without the patch
(``tests/unit/test_model_speedups.py``). If fhir_core changes shape, the patch
stands aside and the original runs.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from fhir_core import fhirabstractmodel as _module
from fhir_core.utils import is_list_type, is_primitive_type

logger = logging.getLogger(__name__)

_ORIGINAL = "_ehr_service_original_reject_null"


def _complex_list_keys(cls: Any) -> tuple[tuple[str, str | None], ...]:
    """(name, alias) of the fields of ``cls`` that are lists of complex types,
    as the original validator selects them."""
    return tuple(
        (name, field.alias)
        for name, field in cls.model_fields.items()
        if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
    )


def _reject_null_complex_elements(cls: Any, data: Any) -> Any:  # pragma: no cover - swapped in
    # Runs with fhir_core.fhirabstractmodel's globals (its code replaces the
    # original's): the names below are put there by install().
    if not isinstance(data, dict):
        return data
    keys = _ehr_service_complex_lists.get(cls)  # type: ignore[name-defined]  # noqa: F821
    if keys is None:
        keys = _ehr_service_complex_list_keys(cls)  # type: ignore[name-defined]  # noqa: F821
        _ehr_service_complex_lists[cls] = keys  # type: ignore[name-defined]  # noqa: F821
    for name, alias in keys:
        value = data.get(alias if alias and alias in data else name)
        if isinstance(value, list) and any(item is None for item in value):
            return _ehr_service_original_reject_null(cls, data)  # type: ignore[name-defined]  # noqa: F821
    return data


def install() -> bool:
    """Swap the faster check in (once); False when fhir_core is not as expected."""
    space = vars(_module)
    if _ORIGINAL in space:
        return True
    try:
        function = _module.FHIRAbstractModel.reject_null_complex_elements.__func__
    except AttributeError:
        logger.warning("fhir_core has changed: its validator is not patched")
        return False
    fast = _reject_null_complex_elements.__code__
    if function.__code__.co_freevars or fast.co_freevars or function.__code__.co_argcount != 2:
        logger.warning("fhir_core has changed: its validator is not patched")
        return False
    space[_ORIGINAL] = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__
    )
    space["_ehr_service_complex_lists"] = {}
    space["_ehr_service_complex_list_keys"] = _complex_list_keys
    function.__code__ = fast
    return True


def installed() -> bool:
    return _ORIGINAL in vars(_module)
