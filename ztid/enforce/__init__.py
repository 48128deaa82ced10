"""Enforcement points: each turns its world into (peer, target, action), asks the policy, acts.

Submodules: :mod:`ztid.enforce.require` (in-process ``require``/``@requires``), and the transport
points (TLS, gRPC, ext_authz). Import what you use from its submodule; ``ztid`` re-exports the
common names.
"""
