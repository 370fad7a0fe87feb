"""FHIR knowledge without I/O: validation, references, compartments, errors."""
