"""The ztid key service (``ztid keyd``): data keys released only to SVIDs the policy allows, under leases.

Modules: ``service`` (the decisions, transport-free), ``server`` (gRPC over ztid mTLS),
``client`` (:class:`~ztid.keyd.client.KeyClient`), ``lease`` (:class:`~ztid.keyd.lease.KeyLease`,
fork-inherited, never renewed in a child) and ``datasets`` (the dataset → target registry).
Import the submodule you need; this package imports nothing heavy. See docs/key-service.md.
"""
