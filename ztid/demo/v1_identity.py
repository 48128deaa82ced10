"""Demo chapter 1: a dev trust domain, verified SVIDs, and the policy's decisions with reasons."""

from __future__ import annotations

from ztid.bundle import BundleSet
from ztid.devca import DevCA
from ztid.errors import SvidError
from ztid.svid import verify_x509_svid
from ztid.testing import TestCA

TD = "ai-platform.example"
FOREIGN_TD = "partner.example"

# Who takes part: (label, SPIFFE ID). The /ns/<tenant>/sa/<component> form carries a tenant.
WORKLOADS = [
    ("training job (vision)", f"spiffe://{TD}/ns/vision/sa/training"),
    ("training job (speech)", f"spiffe://{TD}/ns/speech/sa/training"),
    ("inference server", f"spiffe://{TD}/ns/vision/sa/inference"),
    ("model registry", f"spiffe://{TD}/registry/main"),
    ("pipeline", f"spiffe://{TD}/pipeline/nightly"),
]
FOREIGN = ("partner workload", f"spiffe://{FOREIGN_TD}/training/eval")


def run(story) -> bool:  # type: ignore[no-untyped-def]
    """Mint, verify and decide; return whether every outcome matched what the policy says."""
    policy = story.policy
    story.title("1a. A local trust domain (the embedded default; SPIRE in production)")
    ca = DevCA.create(TD, intermediate=True)
    ca.save(story.workdir / "ca")
    partner = TestCA.create(FOREIGN_TD)
    story.notes.update(ca=ca, partner=partner)
    story.say(f"root CA for {TD} written to {story.workdir / 'ca'} (bundle.pem beside the keys)")
    story.say(f"a second trust domain, {FOREIGN_TD}, that our policy does not federate with")

    # We trust our own domain; the partner's bundle is loaded too, to show that loading a
    # bundle is not the same as trusting its CA for our names.
    bundles = BundleSet([ca.bundle(), partner.bundle()])
    story.title("1b. Each workload presents its X509-SVID; ztid verifies it")
    rows, ok, verified = [], True, {}
    for label, sid in [*WORKLOADS, FOREIGN]:
        svid = (partner if sid.startswith(f"spiffe://{FOREIGN_TD}") else ca).issue(sid, ttl=_ttl())
        v = verify_x509_svid(svid.chain_pem(), bundles)
        verified[label] = v.spiffe_id
        ident = policy.identify(v.spiffe_id)
        rows.append((label, str(v.spiffe_id), ident.component or "-", ident.tenant or "-", "verified"))
    forged = partner.foreign(f"spiffe://{TD}/ns/vision/sa/training")
    try:
        verify_x509_svid(forged.chain_pem(), bundles)
        rows.append(("forged training SVID", f"spiffe://{TD}/ns/vision/sa/training", "-", "-", "ACCEPTED (bug!)"))
        ok = False
    except SvidError as exc:
        rows.append(("forged training SVID", f"spiffe://{TD}/ns/vision/sa/training", "-", "-", f"rejected: {_short(exc)}"))
    story.table(["workload", "SPIFFE ID", "component", "tenant", "verification"], rows)
    story.say("The forgery names our trust domain but was signed by the partner's CA: ztid checks a chain")
    story.say("only against the bundle of the trust domain its ID names, never against a pool of all CAs.")

    story.title("1c. Decisions from the shipped policy.yaml (default deny)")
    cases = [
        # source label, target, target tenant, action, expected allowed
        ("training job (vision)", "data-store", None, "read", True),
        ("training job (vision)", "data-store", None, "write", False),
        ("training job (vision)", "registry", None, "write", True),
        ("training job (vision)", "training", "vision", "write", True),
        ("training job (speech)", "training", "vision", "write", False),
        ("training job (vision)", "inference", None, "read", False),
        ("inference server", "registry", None, "read", True),
        ("inference server", "registry", None, "write", False),
        ("inference server", "data-store", None, "read", False),
        ("model registry", "training", None, "read", False),
        ("pipeline", "feature-store", None, "write", True),
        ("partner workload", "registry", None, "read", False),
    ]
    rows = []
    for label, target, tenant, action, expect in cases:
        d = policy.decide(verified[label], target, action, target_tenant=tenant)
        ok &= d.allowed == expect
        shown = target + (f" ({tenant})" if tenant else "")
        rows.append((label, shown, action, "ALLOW" if d.allowed else "deny", d.code, d.reason))
    story.table(["source", "target", "action", "decision", "code", "reason"], rows)
    story.say(f"policy sha256 {policy.digest[:16]}…  (every decision carries it)")
    return ok


def _ttl():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.timedelta(minutes=15)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 90 else text[:87] + "..."
