"""Certificates that load but are corrupt inside must still end in SvidError, never an untyped exception.

``cryptography`` parses extensions lazily, so a flipped byte can surface as ValueError,
DuplicateExtension or InvalidVersion only when a rule looks at it.
"""

from __future__ import annotations

import random

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ztid.errors import SvidError
from ztid.svid import spiffe_id_from_leaf, verify_x509_svid
from ztid.testing import TestCA, bundle_set


def test_every_single_byte_corruption_of_a_leaf_is_a_typed_rejection() -> None:
    ca = TestCA.create("corrupt.example")
    svid = ca.issue("spiffe://corrupt.example/w")
    bundles = bundle_set(ca)
    der = svid.leaf.public_bytes(serialization.Encoding.DER)
    rng = random.Random(1234)
    loaded = 0
    for i in range(len(der)):
        mutated = bytearray(der)
        mutated[i] ^= 1 << rng.randrange(8)
        try:
            cert = x509.load_der_x509_certificate(bytes(mutated))
        except (ValueError, x509.InvalidVersion):
            continue
        loaded += 1
        chain = [cert, *svid.cert_chain[1:]]
        for call in (lambda: verify_x509_svid(chain, bundles), lambda: spiffe_id_from_leaf(cert)):
            try:
                call()
            except SvidError:
                pass
        # A corrupted leaf must never verify with different signed content. (cryptography ignores the
        # signature BIT STRING's unused-bits byte, so that one flip verifies with TBS and signature intact.)
        try:
            verify_x509_svid(chain, bundles)
        except SvidError:
            continue
        assert cert.tbs_certificate_bytes == svid.leaf.tbs_certificate_bytes, f"byte {i}: changed TBS verified"
        assert cert.signature == svid.leaf.signature, f"byte {i}: changed signature verified"
    assert loaded > len(der) // 2  # most flips still load: the lazy paths really were exercised


def _with_duplicate_basic_constraints(ca: TestCA) -> x509.Certificate:
    """A leaf whose DER carries basicConstraints twice (made by renaming a placeholder extension's OID)."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    signer_cert, signer_key = ca.signer
    placeholder = x509.ObjectIdentifier("2.5.29.99")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dup")]))
        .issuer_name(signer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://corrupt.example/w")]), True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.UnrecognizedExtension(placeholder, b"\x30\x00"), False)
        .sign(signer_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x06\x03\x55\x1d\x63") == 1
    return x509.load_der_x509_certificate(der.replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x13"))


def test_a_leaf_with_a_duplicate_extension_is_a_typed_rejection() -> None:
    ca = TestCA.create("corrupt.example")
    cert = _with_duplicate_basic_constraints(ca)
    for call in (lambda: spiffe_id_from_leaf(cert), lambda: verify_x509_svid([cert], bundle_set(ca))):
        try:
            call()
        except SvidError as exc:
            assert exc.rule == "parse" and "DuplicateExtension" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("a certificate with a duplicate extension was accepted")
