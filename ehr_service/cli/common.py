"""What every command shares: settings, logging, the operator's identity and the
context its writes are audited in."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from ehr_service.config import Settings

if TYPE_CHECKING:
    from ehr_service.audit.events import Auditor
    from ehr_service.exchange.keys import SigningKeys
    from ehr_service.interactions.context import RequestContext, Services
    from ehr_service.security.caller import Caller
    from ehr_service.storage.unit_of_work import UnitOfWork


# A kid is a base64url thumbprint and may begin with "-": read it as the argument it is.
KID_ARGUMENT = {"ignore_unknown_options": True}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (not the stream of
    the moment it was made: a test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(settings: Settings) -> None:
    """Every line a command writes in one format (EHR_LOG_FORMAT: JSON lines or
    text), at EHR_LOG_LEVEL, with ID numbers masked: the service's own loggers,
    Alembic's migration lines and uvicorn's (serve configures those the same)."""
    from ehr_service.mpi.redaction import RedactIdNumbers

    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if any(getattr(h, "ehr_service", False) for h in root.handlers):
        return
    handler = _StderrHandler()
    if settings.log_format == "json":
        from ehr_service.api.observability import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactIdNumbers())
    handler.ehr_service = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def settings_from_env() -> Settings:
    """The settings from the environment; a bad value is one line, not a traceback."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            name = "EHR_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"setting {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def batch(settings: Settings) -> Settings:
    """Settings of a long-running operator job: no statement time limit."""
    return settings.model_copy(update={"statement_timeout_ms": 0})


def operator_caller() -> Caller:
    """The operator running this command, named by the OS account."""
    import pwd  # the account itself: LOGNAME and USER can say anything

    from ehr_service.security.caller import operator

    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no account name (a container's numeric user)
        name = f"uid-{os.getuid()}"
    return operator(name)


def audited_as(unit: UnitOfWork, auditor: Auditor, command: str) -> Caller:
    """Every write transaction of ``unit`` that records no event of its own records
    this command's (an operator's act is on the audit chain, docs/architecture.md §9)."""
    from ehr_service.storage.unit_of_work import touched

    caller = operator_caller()
    unit.each_write = lambda conn: auditor.operator_event(caller, command, None, touched(conn))
    return caller


def record_act(settings: Settings, command: str, what: str | None = None,
               query: str | None = None) -> None:  # fmt: skip
    """Put an operator's act that writes no row of the database (a key file, a token,
    a verification) on the audit chain, committed before the command reports
    success; a database that cannot take it (not migrated, unreachable) is exit 2,
    never an unaudited act done silently."""
    from sqlalchemy.exc import SQLAlchemyError

    from ehr_service.audit.events import Auditor
    from ehr_service.fhir.errors import FhirError
    from ehr_service.storage.database import Database
    from ehr_service.storage.unit_of_work import UnitOfWork

    database = Database(settings.effective_database_url)
    try:
        unit = UnitOfWork(database)
        auditor = Auditor(unit)
        auditor.append_now(auditor.operator_event(operator_caller(), command, what, query=query))
    except (SQLAlchemyError, FhirError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        refuse(f"{command}: the act could not be put on the audit trail ({first}); "
               "run ehr-service migrate first")  # fmt: skip
    finally:
        database.dispose()


def operator_context(services: Services, command: str) -> RequestContext:
    """The context of an operator's command: its writes are audited as that command."""
    from ehr_service.interactions.context import RequestContext

    settings = services.settings
    base_url = settings.base_url or f"http://{settings.host}:{settings.port}/fhir"
    caller = audited_as(services.unit, services.auditor, command)
    return RequestContext(services, base_url, "cli", caller=caller, interaction=f"cli:{command}")


def import_worker_context() -> RequestContext:
    """The context of an import worker process (it lives as long as the process)."""
    from ehr_service.app import build_services

    return operator_context(build_services(batch(settings_from_env())), "import")


@contextmanager
def service_context(command: str) -> Iterator[RequestContext]:
    from ehr_service.app import build_services

    services = build_services(batch(settings_from_env()))
    try:
        yield operator_context(services, command)
    finally:
        services.database.dispose()


def refuse(message: str) -> NoReturn:
    """A refused input: one line on stderr and exit 2 (as ``main`` answers a bad value)."""
    typer.echo(message, err=True)
    raise typer.Exit(2)


def known_regions(unit: UnitOfWork, settings: Settings) -> set[str]:
    """The regions this service knows: its own (EHR_REGION), those of the
    recognition zone (EHR_REGIONS) and those of the registered exchange partners."""
    from sqlalchemy.exc import SQLAlchemyError

    from ehr_service.storage import partners

    try:
        with unit.read() as conn:
            registered = {row["region"] for row in partners.all_partners(conn)}
        return {settings.region, *settings.regions, *registered}
    except SQLAlchemyError as exc:  # e.g. a database not migrated yet
        first = str(exc).splitlines()[0]
        refuse(f"the registered partners' regions cannot be read ({first}): run migrate first")


def check_region(unit: UnitOfWork, settings: Settings, region: str) -> None:
    """Refuse a region this service does not know (exit 2), naming those it knows."""
    known = known_regions(unit, settings)
    if region not in known:
        refuse(
            f"unknown region {region!r}: this service knows {', '.join(sorted(known))} "
            "(EHR_REGION, EHR_REGIONS and the regions of registered partners)"
        )


def signing_keys() -> SigningKeys:
    from ehr_service.exchange.keys import SigningKeys

    return SigningKeys(settings_from_env().signing_keys_dir)


def progress_reporter() -> Callable[[Any], None]:
    """One line rewritten in place on a terminal; into a file or a log, a plain
    line every 10 s (never carriage-return frames)."""
    if sys.stderr.isatty():
        return lambda p: typer.echo("\r" + p.line(), err=True, nl=False)
    last = [0.0]

    def to_log(progress: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= 10.0:
            last[0] = now
            typer.echo(progress.line(), err=True)

    return to_log
