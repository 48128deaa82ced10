"""JWT-SVIDs: validate a peer's token against its own trust domain's bundle, and mint tokens.

Implements ``spiffe/spiffe`` ``standards/JWT-SVID.md`` on ``cryptography`` alone: JWS compact
serialization only; ``alg`` one of the nine of §2.1, checked first; the key chosen by ``kid``
from the bundle of the ``sub`` claim's own trust domain only; then signature, ``aud``, ``exp``,
``nbf``, ``iat``. ``docs/jwt-svid.md`` lists every check, in order, with its reason. The
signature algorithms themselves (which key fits, verify, sign) are in :mod:`ztid._jws`.

Errors never quote the token or its signature (a token is a bearer credential and error
messages end up in logs); they quote the offending header or claim value instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ztid import _strictjson
from ztid._jws import _ALG_LIST, _ALGS, ALGORITHMS, _check_key, _default_alg, _deny, _q, _sign, _verify_signature
from ztid.bundle import Bundle, BundleSet
from ztid.errors import IdentityError, SvidError, UsageError, VerificationError
from ztid.spiffeid import SpiffeId, TrustDomain

__all__ = ["ALGORITHMS", "DEFAULT_LEEWAY", "MAX_TOKEN_LENGTH", "VerifiedJwt", "mint_jwt_svid", "validate_jwt_svid"]

MAX_TOKEN_LENGTH: Final = 16 * 1024
"""Longest token accepted, in characters (a JWT-SVID is typically 300-900)."""
DEFAULT_LEEWAY: Final = timedelta(seconds=30)
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (see docs/jwt-svid.md for why 30 s)."""
MAX_LEEWAY: Final = timedelta(minutes=5)
_MAX_NUMERIC_DATE: Final = 253402300799  # 9999-12-31T23:59:59Z, the largest datetime can hold
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]+\Z")
_B64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE: Final = {ch: i for i, ch in enumerate(_B64_ALPHABET)}
_TO_STD_B64: Final = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    """A JWT-SVID that passed every check.

    Attributes:
        spiffe_id: the subject (``sub``), parsed.
        expiry: ``exp`` as an aware UTC datetime.
        audience: every ``aud`` value of the token, in token order.
        claims: the whole payload, read-only.
        kid: the key ID that selected the verifying key.
        algorithm: the ``alg`` the token was signed with.
    """

    spiffe_id: SpiffeId
    expiry: datetime
    audience: tuple[str, ...]
    claims: Mapping[str, Any]
    kid: str
    algorithm: str


def _fail(why: str) -> SvidError:
    return SvidError(f"invalid JWT-SVID: {why}")


def _b64decode(part: str, what: str) -> bytes:
    if _B64URL_RE.match(part) is None:
        if not part:
            raise _fail(f"the {what} part is empty")
        bad = next(ch for ch in part if not (ch.isascii() and (ch.isalnum() or ch in "-_")))
        hint = " (base64url without padding: '=' is not allowed)" if bad == "=" else ""
        raise _fail(f"the {what} part contains {bad!r}, outside the base64url alphabet{hint}")
    rest = len(part) % 4
    if rest == 1:
        raise _fail(f"the {what} part is not valid base64url ({len(part)} characters encode no byte string)")
    # Canonical only: the unused low bits of the last character must be zero, so one token has one spelling.
    if rest and _B64_VALUE[part[-1]] & (0xF if rest == 2 else 0x3):
        raise _fail(f"the {what} part is not canonical base64url")
    try:
        return binascii.a2b_base64((part + "=" * (-rest % 4)).encode("ascii").translate(_TO_STD_B64), strict_mode=True)
    except binascii.Error as exc:  # pragma: no cover - the checks above leave nothing for it to reject
        raise _fail(f"the {what} part is not valid base64url") from exc


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = _strictjson.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(f"the {what} is not UTF-8") from exc
    except RecursionError as exc:
        raise _fail(f"the {what} is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN/Infinity, over-long integers
        raise _fail(f"the {what} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _fail(f"the {what} must be a JSON object, not {type(obj).__name__}")
    return obj


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGS:  # first, before any other header or claim is looked at (JWT-SVID §4)
        if alg is None:
            raise _fail("header has no 'alg' (JWT-SVID §2.1)")
        raise _fail(f"alg {_q(alg)} is not allowed; allowed are {_ALG_LIST} (JWT-SVID §2.1)")
    if "crit" in header:
        raise _fail(f"header parameter 'crit' ({_q(header['crit'])}) is not supported (RFC 7515 §4.1.11)")
    if "typ" in header and header["typ"] not in ("JWT", "JOSE"):
        raise _fail(f"typ {_q(header['typ'])} must be 'JWT' or 'JOSE' (JWT-SVID §2.3)")
    kid = header.get("kid")
    if kid is None:
        raise _fail("header has no 'kid'; ztid requires a key ID to select the bundle key")
    if not isinstance(kid, str) or not kid:
        raise _fail(f"kid {_q(kid)} must be a non-empty string")
    return alg, kid


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise _fail(f"{name} is null; it must be a NumericDate (RFC 7519 §2)")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{name} {_q(value)} must be a number of seconds since the epoch (RFC 7519 §2)")
    if not (0 <= value <= _MAX_NUMERIC_DATE) or (isinstance(value, float) and not math.isfinite(value)):
        raise _fail(f"{name} {_q(value)} is out of range")
    return float(value)


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if sub is None:
        raise _fail("payload has no 'sub' (JWT-SVID §3.1)")
    try:
        spiffe_id = SpiffeId.parse(sub)
    except IdentityError as exc:
        raise _fail(f"sub is not a SPIFFE ID: {exc}") from exc
    if not spiffe_id.path:
        raise _fail(f"sub {_q(sub)} is a trust domain ID; a workload's SPIFFE ID has a path")
    return spiffe_id


def _token_audience(claims: Mapping[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")
    if aud is None:
        raise _fail("payload has no 'aud' (JWT-SVID §3.2)")
    values = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else None
    if not values or not all(isinstance(v, str) and v for v in values):
        raise _fail(f"aud {_q(aud)} must be a non-empty string or a non-empty list of them (JWT-SVID §3.2)")
    return values


def _audience_values(audience: str | Iterable[str]) -> tuple[str, ...]:
    """The caller's audience as a tuple, in order, without repeats; never empty."""
    if isinstance(audience, str):
        values: tuple[object, ...] = (audience,)
    elif isinstance(audience, (bytes, bytearray)) or not isinstance(audience, Iterable):
        raise UsageError(f"audience must be a string or an iterable of strings, not {type(audience).__name__}")
    else:
        values = tuple(audience)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise UsageError(f"audience {_q(audience)} must name at least one non-empty string; "
                         "an empty audience would accept tokens meant for anyone")
    return tuple(dict.fromkeys(values))  # type: ignore[arg-type]


def _timestamp(at: datetime | None, what: str) -> float:
    if at is None:
        return datetime.now(timezone.utc).timestamp()
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise UsageError(f"{what} must be a timezone-aware datetime, not {_q(at)}")
    return at.timestamp()


def _leeway_seconds(leeway: timedelta) -> float:
    if not isinstance(leeway, timedelta) or not (timedelta(0) <= leeway <= MAX_LEEWAY):
        raise UsageError(f"leeway must be a timedelta between 0 and {MAX_LEEWAY}, not {_q(leeway)}")
    return leeway.total_seconds()


def _bundle_for(bundles: BundleSet | Bundle, td: TrustDomain) -> Bundle:
    bundle = bundles if isinstance(bundles, Bundle) else bundles.get(td)
    # Only the subject's own trust domain may vouch for it (Workload API §6.3): never pool bundles.
    if bundle is None or bundle.trust_domain != td:
        raise _deny(f"no trust bundle for trust domain {td.name!r}")
    return bundle


def validate_jwt_svid(
    token: str,
    bundles: BundleSet | Bundle,
    audience: str | Iterable[str],
    *,
    at: datetime | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> VerifiedJwt:
    """Validate a JWT-SVID presented by a peer.

    Args:
        token: the compact JWS, without any ``Bearer`` prefix.
        bundles: trust bundles; only the one of ``sub``'s trust domain is used.
        audience: the value(s) this validator identifies with; the token's ``aud`` must
            contain at least one of them. Must not be empty.
        at: the time to validate at (aware datetime); now by default.
        leeway: clock skew tolerated on ``exp``, ``nbf`` and ``iat``; 0 to 5 minutes.

    Returns:
        The subject, expiry, audience and claims of the token.

    Raises:
        UsageError: ``audience`` is empty, ``at`` is naive, ``leeway`` is out of range, or
            ``bundles``/``token`` have the wrong type.
        SvidError: the token is malformed or breaks a JWT-SVID rule.
        VerificationError: no bundle or key vouches for it, its signature does not verify,
            it is not meant for ``audience``, or it is expired or not yet valid.
    """
    expected = frozenset(_audience_values(audience))
    now = _timestamp(at, "at")
    skew = _leeway_seconds(leeway)
    if not isinstance(token, str):
        raise UsageError(f"token must be a str, not {type(token).__name__}")
    if not isinstance(bundles, (Bundle, BundleSet)):
        raise UsageError(f"bundles must be a Bundle or a BundleSet, not {type(bundles).__name__}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _fail(f"token is {len(token)} characters, more than the limit of {MAX_TOKEN_LENGTH}")
    if token[:7].lower() == "bearer ":
        raise _fail("token starts with 'Bearer '; pass the token without the authorization scheme")
    parts = token.split(".")
    if len(parts) != 3:
        kind = " (JWE is not a JWT-SVID)" if len(parts) == 5 else ""
        raise _fail(f"token has {len(parts)} parts; JWS compact serialization has exactly 3{kind} (JWT-SVID §5.1)")
    header = _json_object(_b64decode(parts[0], "header"), "header")
    alg, kid = _check_header(header)
    claims = _json_object(_b64decode(parts[1], "payload"), "payload")
    signature = _b64decode(parts[2], "signature")
    spiffe_id = _subject(claims)

    bundle = _bundle_for(bundles, spiffe_id.trust_domain)
    key = bundle.jwt_authorities.get(kid)
    if key is None:
        raise _deny(f"kid {_q(kid)} is not a JWT authority of trust domain {spiffe_id.trust_domain.name!r}")
    _check_key(key, alg, kid)
    _verify_signature(key, alg, signature, f"{parts[0]}.{parts[1]}".encode("ascii"))

    token_aud = _token_audience(claims)
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is None:
        raise _fail("payload has no 'exp' (JWT-SVID §3.3)")
    for name, value in (("nbf", nbf), ("iat", iat)):
        if value is not None and value > exp:
            raise _fail(f"{name} {_q(claims[name])} is after exp {_q(claims['exp'])}; the token can never be valid")
    if expected.isdisjoint(token_aud):
        raise _deny(f"aud {_q(list(token_aud))} does not contain {_q(sorted(expected))} (JWT-SVID §3.2)")
    if now >= exp + skew:
        raise _deny(f"token expired at {_iso(exp)} (checked at {_iso(now)}, leeway {skew:g}s)")
    if nbf is not None and now + skew < nbf:
        raise _deny(f"token not valid before {_iso(nbf)} (checked at {_iso(now)}, leeway {skew:g}s)")
    if iat is not None and now + skew < iat:
        raise _deny(f"token issued in the future, at {_iso(iat)} (checked at {_iso(now)}, leeway {skew:g}s)")
    return VerifiedJwt(
        spiffe_id=spiffe_id,
        expiry=datetime.fromtimestamp(exp, timezone.utc),
        audience=token_aud,
        claims=types.MappingProxyType(claims),
        kid=kid,
        algorithm=alg,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_jwt_svid(
    spiffe_id: SpiffeId | str,
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    kid: str,
    audience: str | Iterable[str],
    ttl: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    algorithm: str | None = None,
) -> str:
    """Sign a JWT-SVID for ``spiffe_id`` (header ``alg``, ``kid``, ``typ: JWT`` only).

    Args:
        spiffe_id: the subject; must have a non-root path.
        key: the trust domain's JWT signing key (EC P-256/P-384/P-521, or RSA >= 2048 bits).
        kid: the key's ID in the trust bundle.
        audience: one value (recommended, JWT-SVID §6.2) or several; never empty.
        ttl: lifetime; ``exp = now + ttl``, truncated to whole seconds.
        now: issue time (aware datetime); now by default.
        algorithm: one of :data:`ALGORITHMS` matching ``key``; by default ES256/384/512 by
            curve, RS256 for RSA.

    Returns:
        The compact JWS.

    Raises:
        UsageError: any argument is empty, of the wrong type, or does not fit the key.
        IdentityError: ``spiffe_id`` is a malformed string.
    """
    sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
    if not sid.path:
        raise UsageError(f"cannot mint a JWT-SVID for trust domain ID {str(sid)!r}: it needs a path")
    aud = _audience_values(audience)
    if not isinstance(kid, str) or not kid:
        raise UsageError(f"kid must be a non-empty string, not {_q(kid)}")
    if not isinstance(ttl, timedelta) or ttl < timedelta(seconds=1):
        raise UsageError(f"ttl must be a timedelta of at least one second, not {_q(ttl)}")
    default = _default_alg(key)
    alg = default if algorithm is None else algorithm
    if not isinstance(alg, str) or alg not in _ALGS:
        raise UsageError(f"algorithm {_q(alg)} is not one of {_ALG_LIST}")
    try:
        _check_key(key.public_key(), alg, kid)
    except VerificationError as exc:
        raise UsageError(f"key does not fit {alg}: {exc}") from exc
    issued = math.floor(_timestamp(now, "now"))
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    claims = {"sub": str(sid), "aud": aud[0] if len(aud) == 1 else list(aud), "exp": issued + int(ttl.total_seconds()),
              "iat": issued}
    signing_input = ".".join(_b64encode(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims))
    return f"{signing_input}.{_b64encode(_sign(key, alg, signing_input.encode('ascii')))}"

