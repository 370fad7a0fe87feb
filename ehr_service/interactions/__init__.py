"""The FHIR REST interactions, free of any web framework (FHIR R4 §3.1.0).

Each module implements one interaction (or one family) on an open database
connection; :mod:`ehr_service.api` and the batch/transaction processor both
call them, so a bundle entry behaves exactly like the same HTTP request.
"""
