"""The key service's decisions: who gets a dataset's data key, for how long, and the log line for each answer.

Transport-free: :class:`KeyService` takes the caller as an already *verified* SVID (its
:class:`~ztid.identity.Identity` and ``notAfter``) and returns plain results; ``ztid.keyd.server``
translates gRPC to and from it. Per request:

1. look the dataset's target and tenant up in the :class:`~ztid.keyd.datasets.DatasetRegistry`
   (``NewKey`` of an unknown dataset proposes them; never trusted for a known dataset);
2. ``policy.decide(caller, target, "read" | "write", target_tenant=tenant)``;
3. if allowed, ask the KEK backend (unwrap, wrap, rewrap) — a backend failure turns the answer
   into a deny with its own code;
4. write the final decision to the decision log (synchronously, before answering; a log that
   cannot be written refuses the request);
5. answer: the key with a lease of ``min(max_lease, caller's SVID remaining lifetime)``, or
   :class:`~ztid.errors.PermissionDenied` carrying the decision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ztid.crypto.keys import DEK_SIZE, KekBackend, dek_context, new_data_key
from ztid.errors import AuditError, CryptoError, DecryptionError, KeyringError, PermissionDenied, UsageError
from ztid.keyd.datasets import DatasetRecord, DatasetRegistry, check_dataset

__all__ = ["DEFAULT_MAX_LEASE", "Caller", "KeyService", "Released", "Wrapped"]

DEFAULT_MAX_LEASE = dt.timedelta(minutes=15)
_LOG_SERVICE = "ztid.keyd"


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller: its Identity (from the policy's templates) and its SVID's notAfter."""

    identity: Any  # ztid.identity.Identity
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class Released:
    """A data key released under a lease (``wrapped`` set for NewKey)."""

    data_key: bytes
    key_id: str
    version: int
    wrapped_key: bytes
    lease_seconds: float
    lease_not_after: dt.datetime
    decision_id: str


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A wrapped data key (WrapKey, RewrapKey): the plaintext key is not in it."""

    key_id: str
    version: int
    wrapped_key: bytes
    decision_id: str


class KeyService:
    """Releases, wraps and rewraps data keys for callers the policy allows.

    Args:
        policy: a :class:`~ztid.policy.Policy` or a :class:`~ztid.policy.watch.PolicyWatcher`
            (its ``current`` policy is used per request, so a reload takes effect at once).
        backend: the KEK backend (:class:`ztid.crypto.keys.Keyring` or a KMS adapter).
        log: the decision log every answer is written to (``None``: not logged; tests only).
        registry: the dataset registry (default: in memory).
        max_lease: the longest lease ever granted.
        key_id: the KEK id new datasets are registered with.
        register_on_new: let an allowed ``NewKey`` register an unknown dataset.

    Raises:
        UsageError: a non-positive ``max_lease``.
    """

    def __init__(self, *, policy: Any, backend: KekBackend, log: Any, registry: DatasetRegistry | None = None,
                 max_lease: dt.timedelta = DEFAULT_MAX_LEASE, key_id: str = "default", register_on_new: bool = True) -> None:
        if not isinstance(max_lease, dt.timedelta) or max_lease <= dt.timedelta(0):
            raise UsageError(f"max_lease must be a positive timedelta, got {max_lease!r}")
        self._policy = policy
        self.backend = backend
        self._log = log
        self.registry = registry if registry is not None else DatasetRegistry()
        self.max_lease = max_lease
        self.key_id = check_dataset(key_id)
        self._register = register_on_new

    @property
    def policy(self) -> Any:
        current = getattr(self._policy, "current", None)
        return self._policy if current is None else current

    # -- the four operations --------------------------------------------------------------------
    def new_key(self, caller: Caller, dataset: str, target: str, tenant: str | None = None) -> Released:
        """A fresh data key for ``dataset``, wrapped by the newest KEK (needs ``write``).

        Raises:
            PermissionDenied: refused (``.decision`` says why; it is in the log).
            AuditError: the decision could not be logged (nothing released).
        """
        policy, record, decision = self._authorize(caller, "write", dataset, proposed=(target, tenant or None))
        result: Released | None = None
        if decision.allowed:
            lease, not_after, decision = self._lease(policy, caller, decision)
            if decision.allowed:
                dek = new_data_key()
                try:
                    w = self.backend.wrap(record.key_id, dek, context=dek_context(record.dataset))
                except CryptoError as exc:
                    decision = self._backend_deny(policy, caller, decision, exc)
                else:
                    result = Released(dek, record.key_id, w.version, w.wrapped, lease, not_after, "")
        decision_id = self._write(decision, "NewKey", dataset, record, result)
        if decision.allowed and result is not None and self.registry.get(record.dataset) is None:
            self.registry.register(record)  # only once the answer is on record
        return self._answer(decision, decision_id, result)

    def wrap_key(self, caller: Caller, dataset: str, data_key: bytes) -> Wrapped:
        """Wrap a data key the caller holds (needs ``write`` on the registered target).

        Raises:
            PermissionDenied: refused, or the data key is not 32 bytes.
            AuditError: the decision could not be logged.
        """
        policy, record, decision = self._authorize(caller, "write", dataset)
        result: Wrapped | None = None
        if decision.allowed:
            try:
                if len(data_key) != DEK_SIZE:
                    raise KeyringError(f"a data key must be {DEK_SIZE} bytes, got {len(data_key)}")
                w = self.backend.wrap(record.key_id, bytes(data_key), context=dek_context(record.dataset))
                result = Wrapped(record.key_id, w.version, w.wrapped, "")
            except CryptoError as exc:
                decision = self._backend_deny(policy, caller, decision, exc)
        decision_id = self._write(decision, "WrapKey", dataset, record, result)
        return self._answer(decision, decision_id, result)

    def unwrap_key(self, caller: Caller, dataset: str, key_id: str, version: int, wrapped_key: bytes) -> Released:
        """The data key of ``wrapped_key`` under a lease (needs ``read`` on the registered target).

        Raises:
            PermissionDenied: refused by the policy, an expired SVID, or a wrapped key that does
                not unwrap (wrong dataset, archived KEK version, tampered).
            AuditError: the decision could not be logged.
        """
        policy, record, decision = self._authorize(caller, "read", dataset)
        result: Released | None = None
        if decision.allowed:
            lease, not_after, decision = self._lease(policy, caller, decision)
            if decision.allowed:
                try:
                    dek = self.backend.unwrap(key_id, version, bytes(wrapped_key), context=dek_context(record.dataset))
                    result = Released(dek, key_id, version, bytes(wrapped_key), lease, not_after, "")
                except CryptoError as exc:
                    decision = self._backend_deny(policy, caller, decision, exc)
        decision_id = self._write(decision, "UnwrapKey", dataset, record, result, key_id=key_id, version=version)
        return self._answer(decision, decision_id, result)

    def rewrap_key(self, caller: Caller, dataset: str, key_id: str, version: int, wrapped_key: bytes) -> Wrapped:
        """Move a wrapped key to the newest KEK version without releasing it (needs ``write``).

        Raises:
            PermissionDenied: refused, or the wrapped key does not unwrap.
            AuditError: the decision could not be logged.
        """
        policy, record, decision = self._authorize(caller, "write", dataset)
        result: Wrapped | None = None
        if decision.allowed:
            try:
                w = self.backend.rewrap(key_id, version, bytes(wrapped_key), context=dek_context(record.dataset))
                result = Wrapped(key_id, w.version, w.wrapped, "")
            except CryptoError as exc:
                decision = self._backend_deny(policy, caller, decision, exc)
        decision_id = self._write(decision, "RewrapKey", dataset, record, result, key_id=key_id, version=version)
        return self._answer(decision, decision_id, result)

    def refuse_unauthenticated(self, method: str, reason: str, *, peer: str | None = None) -> str:
        """Log a refusal of a caller whose certificate did not verify; return its decision id.

        Raises:
            AuditError: the decision could not be logged.
        """
        from ztid.policy import Decision

        decision = Decision.deny("unauthenticated", reason, policy_digest=getattr(self.policy, "digest", ""))
        return self._log_line(decision, method, None, peer=peer or "<unverified>")

    # -- steps ----------------------------------------------------------------------------------
    def _authorize(self, caller: Caller, action: str, dataset: Any,
                   proposed: tuple[str, str | None] | None = None) -> tuple[Any, DatasetRecord, Any]:
        """The policy in force, the dataset's record, and the decision for ``action`` on its target.

        Read once per request, so a reload mid-request cannot mix two policies.
        """
        policy = self.policy
        record, deny = self._record(policy, caller, action, dataset, proposed)
        decision = deny or policy.decide(caller.identity, record.target, action, target_tenant=record.tenant)
        return policy, record, decision

    def _record(self, policy: Any, caller: Caller, action: str, dataset: Any,
                proposed: tuple[str, str | None] | None = None) -> tuple[DatasetRecord, Any]:
        """The dataset's record, or a placeholder and a deny decision."""
        from ztid.policy import Decision

        def deny(code: str, reason: str, target: str = "") -> tuple[DatasetRecord, Any]:
            placeholder = DatasetRecord(dataset if isinstance(dataset, str) else "?", target or "?")
            return placeholder, Decision.deny(code, reason, policy_digest=policy.digest, source=caller.identity,
                                              target=target, action=action)

        try:
            check_dataset(dataset)
        except UsageError as exc:
            return deny("invalid_request", str(exc))
        known = self.registry.get(dataset)
        if proposed is None:
            if known is None:
                return deny("unknown_dataset", f"dataset {dataset!r} is not registered with the key service")
            return known, None
        target, tenant = proposed
        if known is None:
            if not self._register:
                return deny("unknown_dataset", f"dataset {dataset!r} is not registered and this key service "
                            "does not register datasets on NewKey", target)
            if not isinstance(target, str) or not target:
                return deny("invalid_request", "NewKey needs the dataset's target component", target)
            return DatasetRecord(dataset, target, tenant, self.key_id), None
        if (target, tenant) != (known.target, known.tenant):
            return deny("dataset_target_mismatch", f"dataset {dataset!r} belongs to target {known.target!r}"
                        + (f" tenant {known.tenant!r}" if known.tenant else "")
                        + f", not {target!r}" + (f" tenant {tenant!r}" if tenant else ""), known.target)
        return known, None

    def _lease(self, policy: Any, caller: Caller, decision: Any) -> tuple[float, dt.datetime, Any]:
        from ztid.policy import Decision

        now = dt.datetime.now(dt.timezone.utc)
        left = caller.not_after - now
        if left <= dt.timedelta(0):
            return 0.0, now, Decision.deny("svid_expired", f"the caller's SVID expired at {caller.not_after.isoformat()}",
                                           policy_digest=policy.digest, source=caller.identity,
                                           target=decision.target, action=decision.action,
                                           target_tenant=decision.target_tenant)
        lease = min(left, self.max_lease)
        return lease.total_seconds(), now + lease, decision

    @staticmethod
    def _backend_deny(policy: Any, caller: Caller, decision: Any, exc: CryptoError) -> Any:
        from ztid.policy import Decision

        if isinstance(exc, DecryptionError):
            code, reason = "key_unwrap_failed", "the wrapped key does not unwrap for this dataset (wrong dataset, key or version, or tampered)"
        else:
            code, reason = "key_unavailable", str(exc)
        return Decision.deny(code, reason, policy_digest=policy.digest, source=caller.identity, target=decision.target,
                             action=decision.action, rule=decision.rule, target_tenant=decision.target_tenant)

    def _write(self, decision: Any, method: str, dataset: Any, record: DatasetRecord, result: Any, *,
               key_id: str | None = None, version: int | None = None) -> str:
        extra: dict[str, Any] = {"service": _LOG_SERVICE, "method": method, "dataset": str(dataset)[:255]}
        if key_id is not None:
            extra["key_id"], extra["key_version"] = str(key_id)[:255], int(version or 0)
        if isinstance(result, Released):
            extra["lease_seconds"] = round(result.lease_seconds, 3)
            extra["key_version"] = result.version
        elif isinstance(result, Wrapped):
            extra["key_version"] = result.version
        return self._log_line(decision, method, extra)

    def _log_line(self, decision: Any, method: str, extra: dict[str, Any] | None, *, peer: str | None = None) -> str:
        if self._log is None:
            return ""
        try:
            return self._log.record(decision, peer=peer, extra=extra or {"service": _LOG_SERVICE, "method": method})
        except AuditError:
            raise
        except Exception as exc:  # a log that cannot write refuses the request
            raise AuditError(f"decision log write failed: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _answer(decision: Any, decision_id: str, result: Any) -> Any:
        if not decision.allowed or result is None:
            exc = PermissionDenied(decision)
            exc.decision_id = decision_id
            raise exc
        import dataclasses

        return dataclasses.replace(result, decision_id=decision_id)
