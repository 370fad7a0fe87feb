"""Exchange signatures side by side: detached envelopes (RFC 7797) signed and verified
per second with ES256 and Ed25519 (joserfc over ``cryptography``) and SM2SM3
(``security/sm2.py`` over GmSSL), over the same message bytes, in one run, so the
figures compare as ratios. Run by ``make bench`` (section ``signatures``) or alone:
``python -m tests.bench.signature_bench``."""

from __future__ import annotations

import time
from typing import Any

from joserfc.jwk import ECKey, OKPKey

from ehr_service.exchange import envelope
from ehr_service.security.sm2 import SM2Key

HTU = "https://ehr.sc.example/exchange/v1/bundles"


def _keys() -> dict[str, Any]:
    return {
        "ES256": ECKey.generate_key("P-256", private=True),
        "Ed25519": OKPKey.generate_key("Ed25519", private=True),
        "SM2SM3": SM2Key.generate(),
    }


def _public(key: Any) -> Any:
    if isinstance(key, SM2Key):
        return key.public()
    return type(key).import_key(key.as_dict(private=False))


def _rate(action: Any, seconds: float) -> float:
    """Calls per second of ``action`` over about ``seconds`` (after one warm-up call)."""
    action()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        action()
        count += 1
    return count / elapsed


def run(message_kib: int = 20, seconds: float = 1.0) -> list[dict[str, Any]]:
    body = b'{"resourceType":"Bundle","type":"collection","entry":[' + b" " * 1024 * message_kib
    body += b"]}"
    rows = []
    for alg, key in _keys().items():
        kid = key.thumbprint()
        public = _public(key)

        def signed(key: Any = key, alg: str = alg, kid: str = kid) -> str:
            return envelope.sign(body, key, kid=kid, alg=alg, iss="sichuan", aud="chongqing",
                                 htm="POST", htu=HTU)  # fmt: skip

        signature = signed()

        def checked(signature: str = signature, public: Any = public) -> None:
            envelope.verify(body, signature, key_for=lambda iss, kid: public,
                            audience="chongqing", htm="POST", htu=HTU)  # fmt: skip

        rows.append(
            {
                "alg": alg,
                "message_kib": message_kib,
                "sign_per_s": round(_rate(signed, seconds)),
                "verify_per_s": round(_rate(checked, seconds)),
            }
        )
    base = rows[0]
    for row in rows:
        row["sign_vs_es256"] = round(row["sign_per_s"] / base["sign_per_s"], 2)
        row["verify_vs_es256"] = round(row["verify_per_s"] / base["verify_per_s"], 2)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
