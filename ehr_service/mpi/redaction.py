"""Keep resident ID numbers out of log output, whoever logs (our code, uvicorn's
access log with its query strings, libraries): a filter on the handlers masks every
ID-number-shaped run of digits in the formatted message."""

from __future__ import annotations

import copy
import logging
from typing import Any

from ehr_service.mpi.idnumber import mask_candidates


class RedactIdNumbers(logging.Filter):
    """Mask ID numbers in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:  # tracebacks quote values too: format and mask them here
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_candidates(text)
            record.exc_info = None
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's to report
            return True
        if mask_candidates(message) == message:
            return True
        # Mask inside the message and each argument, keeping their shape: formatters
        # such as uvicorn's access log unpack the arguments.
        if isinstance(record.msg, str):
            record.msg = mask_candidates(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _masked(v) for k, v in record.args.items()}
        after = record.getMessage()
        if mask_candidates(after) != after:  # e.g. a number split across arguments
            record.msg, record.args = mask_candidates(after), ()
        return True


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_candidates(value)
    if isinstance(value, int | float) or value is None:
        return value
    text = str(value)
    masked = mask_candidates(text)
    return masked if masked != text else value


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Add the filter to the given handlers (default: the root logger's)."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RedactIdNumbers) for f in handler.filters):
            handler.addFilter(RedactIdNumbers())


def uvicorn_log_config(json_lines: bool = False, level: str = "INFO") -> dict[str, Any]:
    """uvicorn's logging configuration with the filter on every handler; with
    ``json_lines`` every record (ours and uvicorn's) is one JSON object per line.
    The service's own loggers log at ``level`` (EHR_LOG_LEVEL) either way."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_id_numbers"] = {"()": RedactIdNumbers}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_id_numbers")
    if json_lines:
        formatter = {"()": "ehr_service.api.observability.JsonFormatter"}
        config["formatters"] = {"default": formatter, "access": formatter}
    for name in ("ehr_service", "alembic"):
        config["loggers"][name] = {"handlers": ["default"], "level": level, "propagate": False}
    return config
