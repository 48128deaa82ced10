"""JWT-SVID validation cost against the raw signature check it cannot avoid.

Reference, measured in the same run: ``cryptography``'s ECDSA P-256 verify of the very same
signature over the very same signing input (DER already prepared), i.e. the floor any validator
pays. The ratio shows what parsing, the rule checks and the bundle lookup add on top. RS256 and
two rejection paths are printed for context.
"""

from __future__ import annotations

import base64
import timeit
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ztid.bundle import Bundle, BundleSet
from ztid.errors import SvidError
from ztid.jwtsvid import mint_jwt_svid, validate_jwt_svid

NUMBER = 500
REPEAT = 21
AUDIENCE = "spiffe://ai-platform.example/registry"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _best_us(cases: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best per-call time of each case in microseconds; the cases take turns within every round,
    so load from other processes hits ours and the reference alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(REPEAT):
        for name, fn in cases.items():
            best[name] = min(best[name], timeit.timeit(fn, number=NUMBER) / NUMBER * 1e6)
    return best


def _rejecting(token: str, bundles: BundleSet, at: datetime):
    def run() -> None:
        try:
            validate_jwt_svid(token, bundles, AUDIENCE, at=at)
        except SvidError:
            return
        raise AssertionError("expected a rejection")
    return run


def main() -> None:
    now = datetime.now(timezone.utc)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = ec.generate_private_key(ec.SECP256R1())
    bundles = BundleSet([
        Bundle("ai-platform.example", (), {"ec1": ec_key.public_key(), "rsa1": rsa_key.public_key()}),
        Bundle("partner.example", (), {"p1": other.public_key()}),
    ])
    sub = "spiffe://ai-platform.example/ns/prod/sa/trainer"
    token = mint_jwt_svid(sub, key=ec_key, kid="ec1", audience=AUDIENCE, ttl=timedelta(hours=1), now=now)
    rs_token = mint_jwt_svid(sub, key=rsa_key, kid="rsa1", audience=AUDIENCE, ttl=timedelta(hours=1), now=now)
    assert validate_jwt_svid(token, bundles, AUDIENCE, at=now).kid == "ec1"

    h, p, s = token.split(".")
    signing_input = f"{h}.{p}".encode("ascii")
    raw = _unb64(s)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = ec_key.public_key()
    public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))  # the reference accepts it too

    rh, rp, rs = rs_token.split(".")
    rs_input, rs_sig = f"{rh}.{rp}".encode("ascii"), _unb64(rs)
    rs_public = rsa_key.public_key()

    hs256 = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"ec1"}').rstrip(b"=").decode()
    bad_alg = f"{hs256}.{p}.{s}"
    forged = f"{h}.{p}.{'A' if s[0] != 'A' else 'B'}{s[1:]}"
    t = _best_us({
        "es": lambda: validate_jwt_svid(token, bundles, AUDIENCE, at=now),
        "es_ref": lambda: public.verify(der, signing_input, ec.ECDSA(hashes.SHA256())),
        "rs": lambda: validate_jwt_svid(rs_token, bundles, AUDIENCE, at=now),
        "rs_ref": lambda: rs_public.verify(rs_sig, rs_input, padding.PKCS1v15(), hashes.SHA256()),
        "alg_reject": _rejecting(bad_alg, bundles, now),
        "sig_reject": _rejecting(forged, bundles, now),
    })
    ours, ref, rs_ours, rs_ref, alg_reject, sig_reject = t.values()

    print(f"JWT-SVID validate vs raw signature verify, best of {REPEAT} x {NUMBER} calls, token {len(token)} chars")
    print(f"  ES256 validate_jwt_svid             {ours:8.1f} us")
    print(f"  ES256 raw ECDSA P-256 verify (ref)  {ref:8.1f} us")
    print(f"  ES256 ratio                         {ours / ref:8.2f} x   (parsing + rules add {ours - ref:.1f} us)")
    print(f"  RS256 validate_jwt_svid             {rs_ours:8.1f} us")
    print(f"  RS256 raw RSA-2048 verify (ref)     {rs_ref:8.1f} us")
    print(f"  RS256 ratio                         {rs_ours / rs_ref:8.2f} x   (parsing + rules add {rs_ours - rs_ref:.1f} us)")
    print(f"  reject alg HS256 (before any key)   {alg_reject:8.1f} us")
    print(f"  reject forged ES256 signature       {sig_reject:8.1f} us")


if __name__ == "__main__":
    main()
