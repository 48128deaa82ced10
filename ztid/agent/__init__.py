"""The local dev agent: the SPIFFE Workload API on a unix socket, backed by a dev CA (not SPIRE).

``DevAgent(ca_dir, socket_path, spiffe_id=... | selectors=...)``; the ``ztid agent`` command runs it.
See docs/dev-agent.md.
"""

from ztid.agent.selectors import Entry, PeerCred, load_entries, parse_entries
from ztid.agent.server import DevAgent

__all__ = ["DevAgent", "Entry", "PeerCred", "load_entries", "parse_entries"]
