"""The catalogue of ``ztid audit artifacts`` checks: stable IDs, severities, why, how to fix."""

from __future__ import annotations

from ztid.audit.findings import Rule, Severity

__all__ = ["ARTIFACT_RULES"]

_S = Severity

NO_HASH = Rule(
    "ZT-ART-001", "Output artifact without a hash", _S.HIGH,
    "Without a recorded digest nobody downstream (registry, inference loader) can tell the model or dataset "
    "shard it receives from the one the pipeline produced.",
    "Record sha256 for every output artifact in metadata.json / artifact_info.json when the step writes it.")
NO_SIGNATURE = Rule(
    "ZT-ART-002", "Output artifact without a signature", _S.MEDIUM,
    "A hash proves integrity only if the hash itself is trusted; a signature binds the artifact to the "
    "workload identity (SVID) that produced it, which the registry and loaders can pin.",
    "Sign the artifact with the producing workload's SVID (`ztid sign`) and record the signature path.")
MISMATCH = Rule(
    "ZT-ART-003", "Artifact hash mismatch", _S.CRITICAL,
    "The file on disk is not the file the pipeline recorded: tampering (a poisoned checkpoint, a swapped "
    "pickle) or corruption; loading it runs whatever it now contains.",
    "Treat the run as compromised: do not promote it; find who wrote the file (decision log, storage audit "
    "log) and re-run the step.")
CREDENTIAL = Rule(
    "ZT-ART-004", "Credential file in the run directory", _S.CRITICAL,
    "Run directories are copied to object stores, experiment trackers and model registries; a .env, a "
    "private key or a cloud credentials file left there travels with every copy.",
    "Delete it, rotate the credential, and give the step a short-lived credential through its SVID instead "
    "of files.")
MISSING = Rule(
    "ZT-ART-005", "Listed artifact is missing", _S.HIGH,
    "Metadata that names files that are not there cannot be verified; a later step may fill the gap with "
    "anything.",
    "Re-run the step, or remove the entry from the metadata if the artifact was intentionally dropped.")
WEAK_HASH = Rule(
    "ZT-ART-006", "Weak or unknown hash algorithm", _S.MEDIUM,
    "MD5 and SHA-1 digests can be collided: a prepared malicious checkpoint can carry the recorded digest.",
    "Record sha256 (or sha384/sha512).")
ESCAPES = Rule(
    "ZT-ART-007", "Artifact path leaves the run directory", _S.HIGH,
    "A metadata path with '..' or an absolute path points the verifier (or a copy step) at files outside the "
    "run: path traversal.",
    "Record artifact paths relative to the run directory, without '..'.")
UNVERIFIED = Rule(
    "ZT-ART-008", "Signature not verified", _S.INFO,
    "A signature is recorded but this audit did not verify it (no verifier configured).",
    "Verify with `ztid verify` (policy and trust bundle) or give the audit a signature verifier.")
BAD_SIGNATURE = Rule(
    "ZT-ART-009", "Signature does not verify", _S.CRITICAL,
    "The artifact was modified after signing, or signed by an identity the policy does not allow to publish it.",
    "Do not load or promote the artifact; find who wrote it and re-run the producing step.")
NO_METADATA = Rule(
    "ZT-ART-010", "Run without artifact metadata", _S.LOW,
    "Nothing records what the run produced, so nothing downstream can check it.",
    "Have each pipeline step write metadata.json with output_artifacts (path, sha256, signature).")
REMOTE = Rule(
    "ZT-ART-011", "Artifact hash not checkable here", _S.INFO,
    "The artifact is remote (s3://, gs://...) or a directory, so one recorded digest cannot be compared with "
    "the run directory's contents.",
    "Sign directories (model-signing hashes every file); verify remote artifacts where they are stored.")

ARTIFACT_RULES: tuple[Rule, ...] = (NO_HASH, NO_SIGNATURE, MISMATCH, CREDENTIAL, MISSING, WEAK_HASH, ESCAPES,
                                    UNVERIFIED, BAD_SIGNATURE, NO_METADATA, REMOTE)
