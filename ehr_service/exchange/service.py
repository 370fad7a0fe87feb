"""The exchange of one process: partners, the message archive, inbound, outbound."""

from __future__ import annotations

from typing import Any

import httpx

from ehr_service.exchange.archive import Archive
from ehr_service.exchange.inbound import Inbound
from ehr_service.exchange.keys import SigningKeys
from ehr_service.exchange.outbound import Outbound
from ehr_service.exchange.partners import PartnerRegistry


class Exchange:
    def __init__(self, services: Any, client: httpx.Client | None = None) -> None:
        settings = services.settings
        self.services = services
        self.keys = SigningKeys(settings.signing_keys_dir)
        self.partners = PartnerRegistry(services.unit)
        self.archive = Archive(
            services.unit,
            services.identity.protection.keyring,
            self.keys,
            self.partners,
            settings.exchange_id,
            crypto_suite=settings.crypto_suite,
            sm2_id=settings.sm2_distinguishing_id.encode(),
        )
        self.inbound = Inbound(services, self.partners, self.archive)
        self.outbound = Outbound(services, self.partners, self.archive, self.inbound, client)
