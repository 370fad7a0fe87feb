"""The ``ehr-service`` command (operators), one module per command group."""

from ehr_service.cli.main import app, main

__all__ = ["app", "main"]
