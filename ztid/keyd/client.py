"""KeyClient: ask the key service for data keys over ztid mTLS; every refusal becomes a KeyReleaseError.

::

    client = KeyClient("keyd.internal:7443", source=source, server_name="keyd.ai-platform.example")
    lease = client.unwrap_key("imagenet", "default", 3, wrapped)      # KeyLease
    key = lease.key()                                                  # raises once the lease is over

The channel is :func:`ztid.enforce.grpc.secure_channel` (it follows the source's rotation, so a
renewal after rotation presents the fresh SVID). A client belongs to the process that made it:
gRPC is not fork-safe, so a forked child that calls it gets a :class:`KeyReleaseError` instead of
a hang; children use the lease they inherited (see :mod:`ztid.keyd.lease`).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ztid.errors import KeyReleaseError, UsageError, ZtidError
from ztid.keyd.lease import KeyLease, LeaseInfo

if TYPE_CHECKING:  # pragma: no cover
    from ztid.source import SvidSource

__all__ = ["KeyClient", "WrappedKey"]

_DEK_CONTEXT = b"ztid-dek/v1\0"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key as wrapped by the service (what a sealed file's header carries)."""

    key_id: str
    version: int
    wrapped_key: bytes
    decision_id: str = ""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A fresh data key: its wrapped form (for headers) and a lease on the plaintext key."""

    wrapped: WrappedKey
    lease: KeyLease


def _refusal(exc: Any, what: str) -> KeyReleaseError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = getattr(code, "name", "UNKNOWN")
    err = KeyReleaseError(f"key service refused {what}: {details or name}" if name in ("PERMISSION_DENIED", "UNAUTHENTICATED")
                          else f"key service unreachable or failed for {what}: {name}: {details}")
    err.status = name
    reason_code = ""
    if details and details.startswith("ztid: "):
        reason_code = details[len("ztid: "):].split(":", 1)[0]
    err.reason_code = reason_code
    return err


class KeyClient:
    """A client of ``ztid keyd``.

    Args:
        target: the service address (``host:port`` or ``unix:PATH``).
        source: this workload's SVID source (its SVID is the client certificate).
        server_name: a DNS name in the key service's SVID (gRPC checks one; see
            :func:`ztid.enforce.grpc.secure_channel`).
        policy, expect: verify the server's component before each channel build (``expect="keyd"``).
        trust_domain: the service's trust domain (default: this workload's own).
        timeout: seconds per call.

    Raises:
        KeyReleaseError: the channel cannot be set up (no SVID, probe failed).
    """

    def __init__(self, target: str, *, source: "SvidSource", server_name: str | None = None, policy: Any = None,
                 expect: Any = None, trust_domain: Any = None, timeout: float = 10.0) -> None:
        from ztid.enforce.grpc import secure_channel

        if not isinstance(target, str) or not target:
            raise UsageError(f"key service target must be host:port or unix:PATH, got {target!r}")
        self.target = target
        self._source = source
        self._timeout = timeout
        self._pid = os.getpid()
        try:
            self._channel = secure_channel(target, source=source, policy=policy, expect=expect, trust_domain=trust_domain,
                                           server_name=server_name)
        except ZtidError as exc:
            raise KeyReleaseError(f"cannot reach the key service at {target!r}: {exc}") from exc
        from ztid._proto import keyservice_pb2 as pb
        from ztid._proto import keyservice_pb2_grpc as pb_grpc

        self._pb = pb
        self._stub = pb_grpc.KeyServiceStub(self._channel)

    # -- calls ----------------------------------------------------------------------------------
    def _call(self, method: str, request: Any, what: str) -> tuple[Any, float]:
        import grpc

        if os.getpid() != self._pid:
            raise KeyReleaseError(f"this KeyClient belongs to process {self._pid}; a forked child cannot use its gRPC "
                                  "channel (use the lease inherited from the parent, or create a client in the child)")
        try:
            response = getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _refusal(exc, what) from None
        except ZtidError as exc:  # the rotating channel could not rebuild (SVID gone, probe failed)
            raise KeyReleaseError(f"key service call {method} failed: {exc}") from exc
        return response, time.monotonic()

    def _own_not_after(self) -> dt.datetime | None:
        try:
            return self._source.snapshot().svid.not_after
        except ZtidError:
            return dt.datetime.now(dt.timezone.utc)  # no SVID any more: the lease is over at once

    def _lease(self, data_key: bytes, pb_lease: Any, dataset: str, key_id: str, version: int, received: float) -> KeyLease:
        info = LeaseInfo(dataset, key_id, version, pb_lease.seconds,
                         dt.datetime.fromtimestamp(pb_lease.not_after_unix, dt.timezone.utc), pb_lease.decision_id)
        if len(data_key) != 32:
            raise KeyReleaseError(f"key service returned a {len(data_key)}-byte data key for {dataset!r}; expected 32")
        return KeyLease.granted(data_key, info, received_at=received, svid_not_after=self._own_not_after())

    def new_key(self, dataset: str, target: str, *, tenant: str | None = None) -> NewKey:
        """A fresh data key for ``dataset`` held by policy component ``target`` (needs ``write``).

        Raises:
            KeyReleaseError: refused (the message carries the policy's reason) or unreachable.
        """
        req = self._pb.NewKeyRequest(dataset=dataset, target=target, tenant=tenant or "")
        r, at = self._call("NewKey", req, f"a new key for dataset {dataset!r}")
        wrapped = WrappedKey(r.key_id, r.version, r.wrapped_key, r.decision_id)
        return NewKey(wrapped, self._lease(r.data_key, r.lease, dataset, r.key_id, r.version, at))

    def wrap_key(self, dataset: str, data_key: bytes) -> WrappedKey:
        """Wrap a data key this workload holds (needs ``write`` on the dataset's target).

        Raises:
            KeyReleaseError: refused or unreachable.
        """
        r, _ = self._call("WrapKey", self._pb.WrapKeyRequest(dataset=dataset, data_key=bytes(data_key)),
                          f"wrapping a key of dataset {dataset!r}")
        return WrappedKey(r.key_id, r.version, r.wrapped_key, r.decision_id)

    def unwrap_key(self, dataset: str, key_id: str, version: int, wrapped_key: bytes) -> KeyLease:
        """The data key of ``wrapped_key``, under a lease (needs ``read`` on the dataset's target).

        Raises:
            KeyReleaseError: refused (the message carries the policy's reason) or unreachable.
        """
        req = self._pb.UnwrapKeyRequest(dataset=dataset, key_id=key_id, version=version, wrapped_key=bytes(wrapped_key))
        r, at = self._call("UnwrapKey", req, f"the key of dataset {dataset!r}")
        return self._lease(r.data_key, r.lease, dataset, key_id, version, at)

    def rewrap_key(self, dataset: str, key_id: str, version: int, wrapped_key: bytes) -> WrappedKey:
        """Move a wrapped key to the service's newest KEK version (needs ``write``); the key is not released.

        Raises:
            KeyReleaseError: refused or unreachable.
        """
        req = self._pb.RewrapKeyRequest(dataset=dataset, key_id=key_id, version=version, wrapped_key=bytes(wrapped_key))
        r, _ = self._call("RewrapKey", req, f"rewrapping the key of dataset {dataset!r}")
        return WrappedKey(r.key_id, r.version, r.wrapped_key, r.decision_id)

    def rewrap_backend(self) -> "_RewrapBackend":
        """A backend for :func:`ztid.crypto.sealed.rewrap_file` that rewraps through this service."""
        return _RewrapBackend(self)

    def close(self) -> None:
        if os.getpid() == self._pid:
            self._channel.close()

    def __enter__(self) -> "KeyClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyClient({self.target!r})"


class _RewrapBackend:
    """``rewrap(key_id, version, wrapped, context=dek_context(dataset))`` over the service, memoised
    (every file of a dataset carries the same wrapped key, so one call serves them all)."""

    def __init__(self, client: KeyClient) -> None:
        self._client = client
        self._done: dict[tuple[str, str, int, bytes], Any] = {}

    def rewrap(self, key_id: str, version: int, wrapped: bytes, *, context: bytes = b"") -> Any:
        from ztid.crypto.keys import Wrapped

        if not context.startswith(_DEK_CONTEXT):
            raise KeyReleaseError("rewrap through the key service needs a dataset context")
        dataset = context[len(_DEK_CONTEXT):].decode("utf-8")
        key = (dataset, key_id, version, bytes(wrapped))
        if key not in self._done:
            self._done[key] = self._client.rewrap_key(dataset, key_id, version, wrapped)
        w = self._done[key]
        return Wrapped(w.version, w.wrapped_key)
