"""Keep resident ID numbers out of log output, whoever logs (our code, uvicorn's
access log with its query strings, libraries): a filter on the handlers masks every
ID-number-shaped run of digits in the formatted message."""

from __future__ import annotations

import copy
import logging
from typing import Any

from ehr_service.mpi.idnumber import CANDIDATE, mask_candidates


class RedactIdNumbers(logging.Filter):
    """Mask ID numbers in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's to report
            return True
        if CANDIDATE.search(message):
            record.msg = mask_candidates(message)
            record.args = ()
        return True


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Add the filter to the given handlers (default: the root logger's)."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RedactIdNumbers) for f in handler.filters):
            handler.addFilter(RedactIdNumbers())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the filter on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_id_numbers"] = {"()": RedactIdNumbers}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_id_numbers")
    return config
