"""require(): the in-process enforcement point; raises PermissionDenied unless the policy allows.

Set up once per process, then guard code paths::

    from ztid.enforce.require import configure, peer_scope, require, requires

    configure(policy=PolicyWatcher("policy.yaml").start(), self_id="spiffe://ai-platform.example/data-store/main")

    @requires("read")                      # target: this workload's own component (and tenant)
    def fetch_shard(name): ...

    with peer_scope(verified.spiffe_id):   # set by the transport after it authenticated the peer
        fetch_shard("train-00001")

The peer lives in a :mod:`contextvars` variable, so it follows asyncio tasks and never leaks between
threads. Every failure is a deny: no peer (``no_peer``), no policy configured (``no_policy``), no
target and no own identity (``unknown_target``), any exception (``internal_error``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from ztid.errors import PermissionDenied, UsageError
from ztid.identity import Identity
from ztid.policy import model as m
from ztid.policy.engine import Policy
from ztid.policy.model import Decision
from ztid.policy.watch import PolicyWatcher
from ztid.spiffeid import SpiffeId

__all__ = ["configure", "current_peer", "decide", "peer_scope", "require", "requires"]

log = logging.getLogger("ztid.enforce")
F = TypeVar("F", bound=Callable[..., Any])
Peer = Identity | SpiffeId

_peer: ContextVar[Peer | None] = ContextVar("ztid_peer", default=None)


@dataclass(frozen=True, slots=True)
class _Config:
    policy: Policy | None = None
    watcher: PolicyWatcher | None = None
    self_id: SpiffeId | None = None

    def current_policy(self) -> Policy | None:
        return self.watcher.current if self.watcher is not None else self.policy


_config = _Config()
_self_identity: tuple[Policy, SpiffeId, Identity] | None = None  # the last own-identity mapping, per policy


def _identify_self(policy: Policy, self_id: SpiffeId) -> Identity:
    global _self_identity
    hit = _self_identity
    if hit is not None and hit[0] is policy and hit[1] == self_id:
        return hit[2]
    me = policy.identify(self_id)
    _self_identity = (policy, self_id, me)
    return me


def configure(
    *,
    policy: Policy | PolicyWatcher | None = None,
    self_id: SpiffeId | str | None = None,
) -> None:
    """Set the policy (or a :class:`PolicyWatcher` for hot reload) and this workload's own SPIFFE ID.

    Call with no arguments to reset (then every ``require`` denies with ``no_policy``).

    Args:
        policy: a Policy, or a PolicyWatcher whose ``current`` policy is used at each call.
        self_id: this workload's SPIFFE ID; ``require`` then defaults the target to its component
            and the target tenant to its tenant. Default: none (a target must be given).

    Raises:
        IdentityError: ``self_id`` is a malformed SPIFFE ID string.
        UsageError: ``policy`` is neither a Policy nor a PolicyWatcher.
    """
    global _config
    sid = SpiffeId.parse(self_id) if isinstance(self_id, str) else self_id
    if sid is not None and not isinstance(sid, SpiffeId):
        raise UsageError(f"self_id must be a SpiffeId or a SPIFFE ID string, not {type(sid).__name__}")
    if policy is None or isinstance(policy, Policy):
        _config = _Config(policy=policy, self_id=sid)
    elif isinstance(policy, PolicyWatcher):
        _config = _Config(watcher=policy, self_id=sid)
    else:
        raise UsageError(f"policy must be a Policy or a PolicyWatcher, not {type(policy).__name__}")


@contextmanager
def peer_scope(peer: Identity | SpiffeId) -> Iterator[Identity | SpiffeId]:
    """Within the ``with`` block (this thread or task only), ``peer`` is the authenticated peer.

    Raises:
        TypeError: ``peer`` is not an Identity or SpiffeId (parse strings at the edge).
    """
    if not isinstance(peer, (Identity, SpiffeId)):
        raise TypeError(f"peer must be an Identity or SpiffeId, not {type(peer).__name__}")
    token = _peer.set(peer)
    try:
        yield peer
    finally:
        _peer.reset(token)


def current_peer() -> Identity | None:
    """The peer of the current :func:`peer_scope`, as an Identity (mapped by the policy when configured)."""
    peer = _peer.get()
    if peer is None or isinstance(peer, Identity):
        return peer
    policy = _config.current_policy()
    return policy.identify(peer) if policy is not None else Identity.unmapped(peer)


def decide(
    action: str,
    target: str | Identity | SpiffeId | None = None,
    *,
    peer: Identity | SpiffeId | str | None = None,
    target_tenant: str | None = None,
) -> Decision:
    """What :func:`require` would decide, as a value. Never raises.

    Args:
        action: the action asked for.
        target: a component name or the target's identity. Default: this workload's own component
            (and, unless ``target_tenant`` is given, its own tenant), from ``configure(self_id=...)``.
        peer: the caller. Default: the current :func:`peer_scope`.
        target_tenant: the target's tenant. Default: this workload's tenant when the target is this
            workload's own component, else unknown.
    """
    try:
        return _decide(action, target, peer, target_tenant)
    except Exception as exc:  # noqa: BLE001 - an enforcement point that cannot decide denies
        log.exception("require: decision failed; denying")
        return Decision.deny(m.INTERNAL_ERROR, f"internal error while deciding: {type(exc).__name__}",
                             action=action if isinstance(action, str) else repr(action))


def _decide(action: str, target: Any, peer: Any, target_tenant: str | None) -> Decision:
    cfg = _config
    policy = cfg.current_policy()
    tname = target if isinstance(target, str) else ""
    if policy is None:
        return Decision.deny(m.NO_POLICY, "no policy configured for require(); call ztid.enforce.require.configure()",
                             target=tname, action=action)
    if peer is None:
        peer = _peer.get()
    if peer is None:
        return Decision.deny(m.NO_PEER, "no authenticated peer in scope", policy_digest=policy.digest,
                             mode=policy.mode, target=tname, action=action)
    if target is None or (isinstance(target, str) and target_tenant is None and cfg.self_id is not None):
        me = _identify_self(policy, cfg.self_id) if cfg.self_id is not None else None
        if target is None:
            if me is None or me.component is None:
                why = ("no target given and no self_id configured" if me is None else
                       f"no target given and this workload's ID {str(cfg.self_id)!r} matches no identity template")
                return Decision.deny(m.UNKNOWN_TARGET, why, policy_digest=policy.digest, mode=policy.mode, action=action)
            target = me.component
        if me is not None and me.component == target and target_tenant is None:
            target_tenant = me.tenant
    return policy.decide(peer, target, action, target_tenant=target_tenant)


def require(
    action: str,
    target: str | Identity | SpiffeId | None = None,
    *,
    peer: Identity | SpiffeId | str | None = None,
    target_tenant: str | None = None,
) -> Decision:
    """Return the allowing Decision, or raise PermissionDenied carrying the deny.

    Arguments as for :func:`decide`. In audit mode a would-be deny returns (``would_deny=True``).

    Raises:
        PermissionDenied: the policy denied, or no decision could be made.
    """
    decision = decide(action, target, peer=peer, target_tenant=target_tenant)
    if not decision.allowed:
        raise PermissionDenied(decision)
    return decision


def requires(action: str, target: str | None = None, *, target_tenant: str | None = None) -> Callable[[F], F]:
    """Decorate a function (sync or ``async``) so each call first runs :func:`require`.

    The check runs when the function is called (for a coroutine function: when the coroutine
    starts), before its body; a deny raises PermissionDenied and the body never runs.
    """

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_guarded(*args: Any, **kwargs: Any) -> Any:
                require(action, target, target_tenant=target_tenant)
                return await fn(*args, **kwargs)

            return async_guarded  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            require(action, target, target_tenant=target_tenant)
            return fn(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate
