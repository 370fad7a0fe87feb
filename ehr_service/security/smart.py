"""What this deployment offers a SMART client (SMART App Launch v2, Backend Services).

One source for both ways a client discovers it: ``.well-known/smart-configuration``
(:func:`smart_configuration`) and the CapabilityStatement's ``rest.security``
(:func:`oauth_uris`, built from the same configuration), so they never disagree.
Only what the settings configure is claimed.
"""

from __future__ import annotations

from typing import Any

from ehr_service.config import Settings
from ehr_service.security.scopes import AUDITADMIN_SCOPE, SECADMIN_SCOPE, SYSADMIN_SCOPE

SCOPES_SUPPORTED = [
    "system/*.cruds",
    "user/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
    SYSADMIN_SCOPE,
    SECADMIN_SCOPE,
    AUDITADMIN_SCOPE,
]

# The SMART oauth-uris extension (deprecated in SMART v2 in favour of the
# well-known file, still read by many clients): its parts and the configuration
# field each one repeats.
OAUTH_URIS_URL = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
OAUTH_URI_PARTS = (
    ("authorize", "authorization_endpoint"),
    ("token", "token_endpoint"),
    ("register", "registration_endpoint"),
    ("manage", "management_endpoint"),
    ("introspect", "introspection_endpoint"),
    ("revoke", "revocation_endpoint"),
)

SCOPES_DESCRIPTION = (
    "Bearer tokens (SMART App Launch v2 scopes; v1 .read/.write are accepted): system/ and "
    "user/ scopes grant actions (c r u d s) per resource type; a patient/ token sees its own "
    "record only, another resident's resources answering as unknown ids, and none of the "
    "staff operations. Three administrator roles, one per token: ehr/sysadmin ($merge and "
    "Patient/$everything over every resident; a system/ token that may update every type "
    "may too), ehr/secadmin and ehr/auditadmin (the audit trail, AuditEvent, and nothing "
    "else). The deprecated ehr/admin is ehr/sysadmin, ehr/audit is ehr/auditadmin. "
    "Scopes with a query part grant nothing. Discovery: "
    ".well-known/smart-configuration."
)


def smart_configuration(settings: Settings) -> dict[str, Any]:
    """The ``.well-known/smart-configuration`` document of this deployment."""
    issuers = list(settings.token_issuers)
    if settings.trusts_own_tokens:
        issuers.append(settings.own_token_issuer)
    # What is true of this deployment only: Backend Services (client credentials
    # with a signed assertion) when a token endpoint is configured, standalone
    # patient launch only when an authorize endpoint is too.
    launch = settings.authorization_endpoint is not None
    capabilities = ["permission-patient", "permission-user", "permission-v1", "permission-v2"]
    if settings.token_endpoint:
        capabilities.insert(0, "client-confidential-asymmetric")
    if launch:
        capabilities[:0] = ["launch-standalone", "context-standalone-patient"]
    grants = (["client_credentials"] if settings.token_endpoint else []) + (
        ["authorization_code"] if launch else []
    )
    configuration: dict[str, Any] = {
        "issuer": issuers[0] if issuers else None,
        "jwks_uri": settings.jwks_url,
        "authorization_endpoint": settings.authorization_endpoint,
        "token_endpoint": settings.token_endpoint,
        "grant_types_supported": grants or None,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"] if grants else None,
        # SMART Backend Services: servers support RS384 and ES384 client assertions.
        "token_endpoint_auth_signing_alg_values_supported": (
            ["ES384", "RS384", "ES256", "RS256"] if settings.token_endpoint else None
        ),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": capabilities,
        "code_challenge_methods_supported": ["S256"] if launch else None,
        "response_types_supported": ["code"] if launch else None,
    }
    return {k: v for k, v in configuration.items() if v is not None}


def oauth_uris(configuration: dict[str, Any]) -> dict[str, Any] | None:
    """The oauth-uris extension with the endpoints the configuration names; None
    when it names none (an extension needs at least one part)."""
    parts = [
        {"url": part, "valueUri": configuration[field]}
        for part, field in OAUTH_URI_PARTS
        if isinstance(configuration.get(field), str)
    ]
    return {"url": OAUTH_URIS_URL, "extension": parts} if parts else None
