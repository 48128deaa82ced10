"""The public surface of ``ztid`` is pinned: adding or removing a name is a deliberate change."""

import importlib

import ztid

EXPECTED = [
    "AuditError", "Bundle", "BundleError", "BundleSet", "ConfigError", "CryptoError", "Decision",
    "DecryptionError", "Identity", "IdentityError", "KeyReleaseError", "KeyringError", "PermissionDenied",
    "Policy", "PolicyError", "SealedFormatError", "SigningError", "SourceError", "SpiffeId", "SvidError", "TransportError",
    "TrustDomain", "UsageError", "VerificationError", "VerifiedJwt", "VerifiedSvid", "X509Svid",
    "ZtidError", "__version__", "load_policy", "parse_policy", "PolicyWatcher", "current_peer",
    "spiffe_id_from_leaf", "DevCA", "SvidSource", "SvidSnapshot", "StaticSource", "FileSource",
    "WorkloadApiSource", "require_signed", "sign_model", "verify_model", "peer_scope", "require", "requires", "validate_jwt_svid",
    "verify_x509_svid",
]


def test_all_is_sorted_and_pinned() -> None:
    assert ztid.__all__ == sorted(ztid.__all__)
    assert ztid.__all__ == sorted(EXPECTED)


def test_every_public_name_resolves_to_the_module_that_defines_it() -> None:
    for name in ztid.__all__:
        value = getattr(ztid, name)
        assert value is not None, name
        if name != "__version__":
            home = importlib.import_module(ztid._EXPORTS[name])
            assert getattr(home, name) is value, name


def test_errors_share_one_root() -> None:
    for name in ztid.__all__:
        obj = getattr(ztid, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ztid.ZtidError), name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        ztid.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")
