"""X509-SVID certificate rules: parse a chain, and check the SPIFFE leaf and signing-certificate rules.

Leaf rules (X509-SVID standard §2, §3, §4, §5.2), each failure an :class:`~ztid.errors.SvidError`
whose ``rule`` attribute names it:

* ``uri-san``: exactly one URI SAN (DNS and other SANs may be present);
* ``spiffe-id``: it is a valid SPIFFE ID (``spiffe`` scheme, SPIFFE-ID §2) — ``scheme`` for a
  non-``spiffe`` URI;
* ``leaf-path``: the ID has a non-root path;
* ``leaf-ca``: ``basicConstraints`` present with ``cA=false``;
* ``leaf-key-usage``: ``keyUsage`` present and critical, ``digitalSignature`` set, ``keyCertSign`` and ``cRLSign`` clear;
* ``leaf-eku``: ``extendedKeyUsage`` is optional; when present it includes ``serverAuth`` and ``clientAuth``.

Signing certificates presented in the chain (``signing-ca``, ``signing-key-usage``, ``signing-path``):
``cA=true``, ``keyCertSign`` set, and a SPIFFE ID, if any, without a path.

These are checks on certificates alone; path validation against a trust bundle is
:func:`ztid.svid.verify_x509_svid`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ztid.errors import IdentityError, SvidError, ZtidError
from ztid.spiffeid import SpiffeId

__all__ = ["parse_chain", "spiffe_id_from_leaf"]


def _err(rule: str, message: str, cls: type[SvidError] = SvidError) -> SvidError:
    return cls(f"{message} [rule: {rule}]", rule=rule)


def _ext(cert: x509.Certificate, ext_cls: type[Any], rule: str) -> Any:
    try:
        return cert.extensions.get_extension_for_class(ext_cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or malformed extensions
        raise _err(rule, f"certificate extensions are malformed: {exc}") from exc


def _split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (the Workload API's ``x509_svid`` encoding)."""
    out, i = [], 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise _err("parse", "chain is neither PEM nor concatenated DER certificates")
        first = data[i + 1]
        if first < 0x80:
            length, head = first, 2
        else:
            n = first & 0x7F
            if n == 0 or n > 4 or i + 2 + n > len(data):
                raise _err("parse", "chain is neither PEM nor concatenated DER certificates")
            length, head = int.from_bytes(data[i + 2 : i + 2 + n], "big"), 2 + n
        end = i + head + length
        if end > len(data):
            raise _err("parse", "chain is truncated (DER length runs past the end)")
        out.append(data[i:end])
        i = end
    return out


_F = TypeVar("_F", bound=Callable[..., Any])


def _typed(func: _F) -> _F:
    """Guarantee that only ztid errors leave ``func``.

    ``cryptography`` parses certificate fields lazily, so a certificate that loaded can still
    raise ``ValueError``, ``DuplicateExtension`` or ``InvalidVersion`` deep inside a check; any
    such surprise becomes an SvidError (a deny), never an untyped exception.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ZtidError:
            raise
        except Exception as exc:
            raise _err("parse", f"certificate is malformed: {type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


@_typed
def parse_chain(chain: bytes | str | Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """Certificates from PEM, concatenated DER, or a sequence of Certificates (leaf first).

    Raises:
        SvidError: empty or unparseable.
    """
    if isinstance(chain, str):
        chain = chain.encode("utf-8", "surrogateescape")
    if isinstance(chain, (bytes, bytearray, memoryview)):
        data = bytes(chain)
        try:
            if b"-----BEGIN" in data:
                if b"-----BEGIN CERTIFICATE-----" not in data:
                    raise _err("parse", "chain PEM holds no CERTIFICATE block")
                certs = tuple(x509.load_pem_x509_certificates(data))
            else:
                certs = tuple(x509.load_der_x509_certificate(d) for d in _split_der(data))
        except ValueError as exc:
            raise _err("parse", f"chain is not parseable: {exc}") from exc
    else:
        try:
            certs = tuple(chain)
        except TypeError as exc:
            raise _err("parse", f"chain must be bytes or a sequence of Certificates, not {type(chain).__name__}") from exc
        for c in certs:
            if not isinstance(c, x509.Certificate):
                raise _err("parse", f"chain must hold cryptography Certificates, not {type(c).__name__}")
    if not certs:
        raise _err("parse", "chain is empty")
    return certs


@_typed
def spiffe_id_from_leaf(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID leaf, after checking every leaf rule (see module docstring).

    Raises:
        SvidError: a leaf rule is broken; ``.rule`` names it.
    """
    if not isinstance(cert, x509.Certificate):
        raise _err("type", f"expected a cryptography Certificate, not {type(cert).__name__}")
    san = _ext(cert, x509.SubjectAlternativeName, "uri-san")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    if len(uris) != 1:
        raise _err("uri-san", f"X509-SVID leaf must have exactly one URI SAN, found {len(uris)}")
    uri = uris[0]
    if not uri.startswith("spiffe://"):
        raise _err("scheme", f"X509-SVID leaf URI SAN is not a spiffe:// ID ({uri[:200]!r})")
    try:
        spiffe_id = SpiffeId.parse(uri)
    except IdentityError as exc:
        raise _err("spiffe-id", f"X509-SVID leaf URI SAN is not a valid SPIFFE ID: {exc}") from exc
    if not spiffe_id.path:
        raise _err("leaf-path", f"X509-SVID leaf SPIFFE ID must have a path ({uri!r} names the trust domain itself)")
    bc = _ext(cert, x509.BasicConstraints, "leaf-ca")
    if bc is None:
        raise _err("leaf-ca", "X509-SVID leaf must carry basicConstraints with cA=false (extension missing)")
    if bc.ca:
        raise _err("leaf-ca", "X509-SVID leaf must have basicConstraints cA=false (it is a CA certificate)")
    try:
        ku_ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise _err("leaf-key-usage", "X509-SVID leaf must carry keyUsage (extension missing)") from None
    except ValueError as exc:
        raise _err("leaf-key-usage", f"certificate extensions are malformed: {exc}") from exc
    if not ku_ext.critical:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must be marked critical (X509-SVID §4.3)")
    ku = ku_ext.value
    if not ku.digital_signature:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must include digitalSignature")
    if ku.key_cert_sign:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must not include keyCertSign")
    if ku.crl_sign:
        raise _err("leaf-key-usage", "X509-SVID leaf keyUsage must not include cRLSign")
    eku = _ext(cert, x509.ExtendedKeyUsage, "leaf-eku")
    if eku is not None and not (ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku):
        raise _err("leaf-eku", "X509-SVID leaf extendedKeyUsage, when present, must include serverAuth and clientAuth")
    return spiffe_id


def _check_signing_cert(cert: x509.Certificate, index: int) -> None:
    where = f"chain certificate #{index + 1} ({cert.subject.rfc4514_string()!r})"
    bc = _ext(cert, x509.BasicConstraints, "signing-ca")
    if bc is None or not bc.ca:
        raise _err("signing-ca", f"{where} is a signing certificate and must have basicConstraints cA=true")
    ku = _ext(cert, x509.KeyUsage, "signing-key-usage")
    if ku is None or not ku.key_cert_sign:
        raise _err("signing-key-usage", f"{where} is a signing certificate and its keyUsage must include keyCertSign")
    san = _ext(cert, x509.SubjectAlternativeName, "signing-path")
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []:
        if uri.startswith("spiffe://") and "/" in uri[len("spiffe://") :]:
            raise _err("signing-path", f"{where} names SPIFFE ID {uri[:200]!r}; a signing certificate's ID must have no path")
