"""The Envoy ext_authz sidecar: a grpc.aio server around :mod:`ztid.enforce.extauthz` (no policy logic here).

``config`` (YAML, validated once), ``server`` (listeners, health, reflection, reload, drain),
``metrics`` (Prometheus), ``tls`` (mTLS with the sidecar's own SVID on TCP listeners).
"""

from ztid.sidecar.config import SidecarConfig, load_config
from ztid.sidecar.server import Sidecar

__all__ = ["Sidecar", "SidecarConfig", "load_config"]
