"""The HTTP/1.1 protocol ``ehr-service serve`` runs: uvicorn's httptools protocol,
with two changes for what reaches it before the application does.

- A request target with raw UTF-8 (``GET /fhir/Patient?family=王``, as curl
  ``--globoff`` and some hospital clients send it, not percent-encoded) is
  refused by the parser (llhttp: "Invalid char in url query"; h11 refuses it
  too, its request-target grammar being visible ASCII). Here the bytes of 0x80
  and above in a request line are percent-encoded before the parser reads them,
  which is what the client should have sent: the query is then decoded as UTF-8
  like any other, and the search works. Only request lines are touched: the
  protocol knows where each begins (the start of the connection, or right after
  a complete message), never a header or a body.
- A request the parser still refuses (control characters, a malformed request
  line, a raw UTF-8 target in a pipelined request) is answered with a FHIR
  OperationOutcome 400 instead of uvicorn's plain text, and logged by the
  access logger, which never sees it otherwise.
"""

from __future__ import annotations

import logging
import re

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ehr_service.fhir.errors import Category, Issue, operation_outcome

_HIGH = re.compile(rb"[\x80-\xff]")
access_log = logging.getLogger("ehr_service.access")
REFUSED = (
    "The HTTP request could not be parsed (its request line, a header or the framing "
    "is malformed); send the request target percent-encoded (RFC 3986)"
)


def percent_encode_high(data: bytes) -> bytes:
    """Bytes of 0x80 and above as ``%XX`` (UTF-8 text becomes its URI form)."""
    return _HIGH.sub(lambda m: b"%%%02X" % m.group()[0], data)


class FhirHttpToolsProtocol(HttpToolsProtocol):
    """httptools with raw UTF-8 request targets accepted and refusals as
    OperationOutcomes (see the module's text)."""

    # Where the bytes coming next stand: inside a request line (or before one)?
    _line_open = True
    _line_started = False  # has a byte of that line been seen (past leading CRLFs)?
    _begin_is_ours = False  # is the parser's next message begin the line we handled?

    def data_received(self, data: bytes) -> None:
        if self._line_open:
            data = self._encode_request_line(data)
        super().data_received(data)

    def _encode_request_line(self, data: bytes) -> bytes:
        start = 0
        if not self._line_started:
            start = len(data) - len(data.lstrip(b"\r\n"))
            if start == len(data):
                return data  # only the CRLFs a client may send between messages
            self._line_started = self._begin_is_ours = True
        end = data.find(b"\n", start)
        if end < 0:  # the line goes on in the next data
            return data[:start] + percent_encode_high(data[start:])
        self._line_open = self._line_started = False
        return data[:start] + percent_encode_high(data[start:end]) + data[end:]

    def on_message_begin(self) -> None:
        if self._begin_is_ours:
            self._begin_is_ours = False
        else:  # a pipelined request began in data already handed over: leave it be
            self._line_open = self._line_started = False
        super().on_message_begin()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._line_open, self._line_started, self._begin_is_ours = True, False, False

    def send_400_response(self, msg: str) -> None:
        issue = Issue(REFUSED, "structure")
        body = orjson.dumps(operation_outcome(Category.INCORRECT, [issue]))
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/fhir+json; charset=utf-8\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        access_log.info(
            "request",
            extra={"status": 400, "interaction": "unparsable", "client": client, "path": None},
        )
