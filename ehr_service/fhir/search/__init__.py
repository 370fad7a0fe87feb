"""FHIR search knowledge without I/O: parameter registry, index value extraction,
and parsing of search requests (R4 §3.1.1)."""
