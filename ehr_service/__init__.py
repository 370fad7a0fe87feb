"""ehr-service: FHIR R4 lifelong health record service."""

__version__ = "0.1.0"
