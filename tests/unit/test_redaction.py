"""ID numbers never reach log output, whoever logs them."""

from __future__ import annotations

import io
import logging
import logging.config

from ehr_service.mpi.redaction import RedactIdNumbers, uvicorn_log_config
from tests.helpers import make_id_number


def test_access_log_line_is_masked() -> None:
    number = make_id_number()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactIdNumbers())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            '%s - "%s %s HTTP/1.1" %d',
            "127.0.0.1:5000",
            "GET",
            f"/fhir/Patient?identifier=urn:oid:2.16.156.10011.1.3|{number}",
            200,
        )
        logger.warning("legacy %s and phone %s", "110105491231002", "13800000001")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert number not in output and "110105491231002" not in output
    assert number[:4] + "*" * 10 + number[-4:] in output
    assert "13800000001" in output and "200" in output


def test_uvicorn_access_formatter_still_formats() -> None:
    from uvicorn.logging import AccessFormatter

    number = make_id_number()
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", f"/fhir/Patient?identifier={number}", "1.1", 200),
        None,
    )
    assert RedactIdNumbers().filter(record)
    line = AccessFormatter(fmt="%(client_addr)s %(request_line)s %(status_code)s").format(record)
    assert number not in line and "GET /fhir/Patient?identifier=" in line and "200" in line


def test_uvicorn_configuration_filters_every_handler() -> None:
    config = uvicorn_log_config()
    assert all("redact_id_numbers" in h["filters"] for h in config["handlers"].values())
    logging.config.dictConfig({**config, "disable_existing_loggers": False})
    handlers = logging.getLogger("uvicorn.access").handlers
    assert handlers and all(
        any(isinstance(f, RedactIdNumbers) for f in h.filters) for h in handlers
    )
