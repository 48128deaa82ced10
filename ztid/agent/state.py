"""What the dev agent serves: the CA, the bundles, the entries, and SVIDs that rotate at half-life.

All mutable agent state lives here behind one lock and one condition variable. Streams wait on
:meth:`AgentState.wait` and re-read the state when it changes (a reload, a rotation) or when
their own next rotation is due; every response they send is the full state (Workload API §4.3).

Bundles come from the CA directory on every (re)load:

* own trust domain: X.509 authorities from ``DIR/bundle.pem`` (edit it to add or drop a root,
  then reload), JWT authorities from the CA's JWT key;
* federated trust domains: ``DIR/federation/<trust domain>.pem`` or ``.json`` (a SPIFFE bundle),
  one file per trust domain, the file name naming it. Removing a file removes the bundle.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ztid.agent.selectors import Entry, PeerCred, check_dns_names, load_entries, match
from ztid.bundle import Bundle, BundleSet
from ztid.devca import DevCA
from ztid.errors import BundleError, ConfigError, UsageError, ZtidError
from ztid.spiffeid import SpiffeId, TrustDomain
from ztid.svid import X509Svid

__all__ = ["AgentState", "Issued"]

log = logging.getLogger("ztid.agent")


@dataclass(frozen=True, slots=True)
class Issued:
    """An SVID the agent handed out and when it will be replaced (epoch seconds)."""

    svid: X509Svid
    rotate_at: float


@dataclass(frozen=True, slots=True)
class _Loaded:
    ca: DevCA
    bundles: BundleSet  # own trust domain first in iteration order, then federated ones
    entries: tuple[Entry, ...]


def _der(certs: object) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)  # type: ignore[attr-defined]


class AgentState:
    """The CA directory, the entries and the SVID cache, reloadable while streams are open.

    Args:
        ca_dir: a directory written by ``ztid ca init`` / :meth:`DevCA.save`.
        spiffe_id: serve this one identity to every local caller (exclusive with ``selectors``).
        selectors: a selector file (see :mod:`ztid.agent.selectors`).
        ttl: lifetime of each X509-SVID; it is replaced at half-life.
        rotate_every: replace SVIDs this often instead (demos, tests), when shorter than half-life.
        jwt_ttl: lifetime of JWT-SVIDs.
        dns_names: DNS SANs for the ``spiffe_id`` form's SVIDs (selector entries carry their own).

    Raises:
        UsageError: neither or both of ``spiffe_id`` and ``selectors``; a non-positive duration.
        ConfigError: the CA directory, a bundle file or the selector file is invalid.
    """

    def __init__(
        self,
        ca_dir: str | os.PathLike[str],
        *,
        spiffe_id: SpiffeId | str | None = None,
        selectors: str | os.PathLike[str] | None = None,
        ttl: dt.timedelta = dt.timedelta(hours=1),
        rotate_every: dt.timedelta | None = None,
        jwt_ttl: dt.timedelta = dt.timedelta(minutes=5),
        dns_names: tuple[str, ...] = (),
    ) -> None:
        if (spiffe_id is None) == (selectors is None):
            raise UsageError("give exactly one of spiffe_id (one identity for every caller) or selectors (a selector file)")
        for name, value in (("ttl", ttl), ("rotate_every", rotate_every), ("jwt_ttl", jwt_ttl)):
            if value is not None and (not isinstance(value, dt.timedelta) or value <= dt.timedelta(0)):
                raise UsageError(f"{name} must be a positive duration, got {value!r}")
        self.ca_dir = Path(ca_dir)
        self._fixed_id = None if spiffe_id is None else (spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id))
        self._selectors = None if selectors is None else Path(selectors)
        self._dns_names = check_dns_names(list(dns_names), "dns_names")
        self.ttl, self.rotate_every, self.jwt_ttl = ttl, rotate_every, jwt_ttl
        self._cond = threading.Condition()
        self._version = 0
        self._closed = False
        self._issued: dict[SpiffeId, Issued] = {}
        self._loaded = self._load()
        self._check_entries(self._loaded)

    # -- loading -------------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        ca = DevCA.load(self.ca_dir)
        own_pem = self.ca_dir / "bundle.pem"
        try:
            own = Bundle.load(own_pem, trust_domain=ca.trust_domain) if own_pem.exists() else ca.bundle()
        except BundleError as exc:
            raise ConfigError(str(exc), location=str(own_pem)) from exc
        own = own.with_jwt_authorities(ca.bundle().jwt_authorities)
        bundles = [own]
        fed_dir = self.ca_dir / "federation"
        for path in sorted(fed_dir.iterdir()) if fed_dir.is_dir() else ():
            if path.suffix not in (".pem", ".json") or not path.is_file():
                continue
            try:
                td = TrustDomain.parse(path.stem)
                if td == ca.trust_domain:
                    raise ConfigError("a federated bundle must not be for the agent's own trust domain", location=str(path))
                bundles.append(Bundle.load(path, trust_domain=td))
            except (BundleError, ZtidError) as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(str(exc), location=str(path)) from exc
        if self._fixed_id is not None:
            entries: tuple[Entry, ...] = (Entry(self._fixed_id, dns_names=self._dns_names),)
        else:
            assert self._selectors is not None
            entries = load_entries(self._selectors)
        return _Loaded(ca, BundleSet(bundles), entries)

    @staticmethod
    def _check_entries(loaded: _Loaded) -> None:
        for e in loaded.entries:
            if e.spiffe_id.trust_domain != loaded.ca.trust_domain or not e.spiffe_id.path:
                raise ConfigError(
                    f"cannot issue {str(e.spiffe_id)!r}: the CA issues only IDs with a path in trust domain "
                    f"{loaded.ca.trust_domain.name!r}",
                    location=str(e.spiffe_id),
                )

    def reload(self) -> None:
        """Re-read the CA directory and the selector file; keep the old state if anything is invalid.

        SVIDs are re-issued when the CA changed. Open streams see the new state at once.

        Raises:
            ConfigError: the new files are invalid (the agent keeps serving the previous state).
            KeyringError: a key file has loose permissions.
        """
        loaded = self._load()
        self._check_entries(loaded)
        with self._cond:
            old = self._loaded
            same_ca = _der([old.ca.root, *old.ca.signer[:1]]) == _der([loaded.ca.root, *loaded.ca.signer[:1]])
            if not same_ca:
                self._issued.clear()
            self._loaded = loaded
            self._version += 1
            self._cond.notify_all()
        log.info("reloaded %s: %d bundle(s), %d entr%s", self.ca_dir, len(loaded.bundles), len(loaded.entries),
                 "y" if len(loaded.entries) == 1 else "ies")

    def set_entries(self, entries: tuple[Entry, ...]) -> None:
        """Replace the registration entries in memory (tests, embedding); streams re-check at once."""
        loaded = _Loaded(self._loaded.ca, self._loaded.bundles, tuple(entries))
        self._check_entries(loaded)
        with self._cond:
            self._loaded = loaded
            self._version += 1
            self._cond.notify_all()

    # -- reading -------------------------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        return self._loaded.ca.trust_domain

    @property
    def bundles(self) -> BundleSet:
        """Own and federated bundles, as served right now."""
        return self._loaded.bundles

    @property
    def version(self) -> int:
        return self._version

    def entries_for(self, peer: PeerCred | None) -> tuple[Entry, ...]:
        """The entries a caller matches (none for an unknown caller)."""
        if peer is None:
            return ()
        return match(self._loaded.entries, peer)

    def issued(self, spiffe_id: SpiffeId) -> Issued:
        """The current SVID for ``spiffe_id``, minting a new one when none is cached or it is due."""
        with self._cond:
            cur = self._issued.get(spiffe_id)
            now = time.time()
            if cur is not None and now < cur.rotate_at:
                return cur
            dns = next((e.dns_names for e in self._loaded.entries if e.spiffe_id == spiffe_id), ())
            svid = self._loaded.ca.issue(spiffe_id, ttl=self.ttl, dns_names=dns)
            # Half of the life left at issuance (notBefore is backdated for clock skew, so not from it).
            rotate_at = now + (svid.not_after.timestamp() - now) / 2
            if self.rotate_every is not None:
                rotate_at = min(rotate_at, now + self.rotate_every.total_seconds())
            cur = Issued(svid, max(rotate_at, now + 0.5))
            self._issued[spiffe_id] = cur
            self._version += 1  # other streams of this identity pick up the new SVID
            self._cond.notify_all()
        log.info("issued %s (serial %x, not after %s)", spiffe_id, svid.leaf.serial_number, svid.not_after.isoformat())
        return cur

    def x509_bundle_ders(self) -> dict[str, bytes]:
        """Trust domain ID -> concatenated DER CA certificates, own trust domain included."""
        return {str(td.id()): _der(b.x509_authorities) for td, b in self._loaded.bundles.items()}

    def jwt_bundle_docs(self) -> dict[str, bytes]:
        """Trust domain ID -> JWKS holding only the JWT authorities (Workload API §6.2.2)."""
        return {str(td.id()): Bundle(td, (), b.jwt_authorities).to_jwks() for td, b in self._loaded.bundles.items()}

    def mint_jwt(self, spiffe_id: SpiffeId, audience: tuple[str, ...]) -> str:
        return self._loaded.ca.mint_jwt(spiffe_id, audience, ttl=self.jwt_ttl)

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, seen_version: int, *, until: float | None, alive: Callable[[], bool]) -> int:
        """Block until the state changes past ``seen_version``, ``until`` (epoch s) passes, or not ``alive()``."""
        with self._cond:
            while self._version == seen_version and not self._closed and alive():
                timeout = 1.0 if until is None else min(1.0, until - time.time())
                if timeout <= 0:
                    break
                self._cond.wait(timeout)
            return self._version

    def kick(self) -> None:
        """Wake every waiting stream (a client went away)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
