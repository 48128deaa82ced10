"""X509-SVID verification cost: ztid.verify_x509_svid next to cryptography's raw verifier, same chain, same run.

References measured here: ``x509.load_pem_x509_certificate`` (parsing alone) and
``ClientVerifier.verify`` on already-parsed certificates (path validation alone, verifier prebuilt).
ztid's figure includes PEM parsing, the SPIFFE leaf rules, bundle lookup, building the verifier at
the current time, and path validation.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.x509 import verification as xv

from ztid.bundle import BundleSet
from ztid.svid import spiffe_id_from_leaf, verify_x509_svid
from ztid.testing import TestCA


def _measure(cases: list[tuple[str, Callable[[], object]]], *, rounds: int = 9, round_s: float = 0.25) -> list[tuple[str, float]]:
    """µs per call for each case: rounds interleaved across cases (so load drifts hit all alike), median kept."""
    sizes = []
    for _, fn in cases:
        fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.05:
            fn()
            n += 1
        sizes.append(max(20, int(n * round_s / 0.05)))
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for i, (_, fn) in enumerate(cases):
            t0 = time.perf_counter()
            for _ in range(sizes[i]):
                fn()
            samples[i].append((time.perf_counter() - t0) / sizes[i] * 1e6)
    return [(name, sorted(s)[len(s) // 2]) for (name, _), s in zip(cases, samples)]


def main() -> None:
    ca = TestCA.create("bench.test")
    other = TestCA.create("other.test")
    svid = ca.issue("spiffe://bench.test/ns/a/sa/training")
    pem = svid.chain_pem()  # leaf only: DevCA without intermediate
    bundles = BundleSet([ca.bundle(), other.bundle()])
    leaf = svid.leaf
    store = xv.Store([ca.root])
    verifier = xv.PolicyBuilder().store(store).time(dt.datetime.now(dt.timezone.utc)).build_client_verifier()

    rows = _measure(
        [
            ("x509.load_pem_x509_certificate(leaf)", lambda: x509.load_pem_x509_certificate(pem)),
            ("cryptography ClientVerifier.verify(leaf, []) (prebuilt)", lambda: verifier.verify(leaf, [])),
            ("cryptography build verifier + verify", lambda: xv.PolicyBuilder().store(store).build_client_verifier().verify(leaf, [])),
            ("ztid spiffe_id_from_leaf(leaf) (leaf rules only)", lambda: spiffe_id_from_leaf(leaf)),
            ("ztid verify_x509_svid(certs, bundles)", lambda: verify_x509_svid([leaf], bundles)),
            ("ztid verify_x509_svid(pem, bundles)", lambda: verify_x509_svid(pem, bundles)),
        ]
    )
    width = max(len(name) for name, _ in rows)
    print("2-certificate chain (EC P-256 leaf + root), µs per call (median of 9 interleaved rounds)")
    for name, us in rows:
        print(f"  {name:<{width}}  {us:8.1f} µs")
    raw = rows[1][1]
    print(f"ratio ztid verify (certs) / raw ClientVerifier.verify: {rows[4][1] / raw:.2f}x")
    print(f"ratio ztid verify (PEM)   / raw ClientVerifier.verify: {rows[5][1] / raw:.2f}x")
    print(f"ratio ztid verify (PEM)   / (PEM parse + raw verify):  {rows[5][1] / (raw + rows[0][1]):.2f}x")


if __name__ == "__main__":
    main()
