"""DNS SANs on agent-issued SVIDs: gRPC clients check a DNS name on servers, so the agent can add one."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from ztid.agent.selectors import parse_entries
from ztid.agent.state import AgentState
from ztid.devca import DevCA
from ztid.errors import ConfigError
from ztid.spiffeid import SpiffeId


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    DevCA.create("dns.example").save(tmp_path / "ca")
    return tmp_path / "ca"


def _dns(state: AgentState, sid: str) -> list[str]:
    leaf = state.issued(SpiffeId.parse(sid)).svid.leaf
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_fixed_identity_gets_the_configured_dns_names(ca_dir: Path) -> None:
    state = AgentState(ca_dir, spiffe_id="spiffe://dns.example/registry", dns_names=("registry.ml",))
    assert _dns(state, "spiffe://dns.example/registry") == ["registry.ml"]


def test_selector_entries_carry_their_own_dns_names(ca_dir: Path, tmp_path: Path) -> None:
    sel = tmp_path / "sel.yaml"
    sel.write_text("entries:\n"
                   "  - {spiffe_id: spiffe://dns.example/registry, selectors: {uid: 0}, dns_names: [registry.ml]}\n"
                   "  - {spiffe_id: spiffe://dns.example/training, selectors: {uid: 1}}\n")
    state = AgentState(ca_dir, selectors=sel)
    assert _dns(state, "spiffe://dns.example/registry") == ["registry.ml"]
    assert _dns(state, "spiffe://dns.example/training") == []


@pytest.mark.parametrize("bad", ["", "-x.ml", "a..b", "under_score", "x" * 254, "sp ace"])
def test_bad_dns_names_are_config_errors(ca_dir: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="DNS name"):
        AgentState(ca_dir, spiffe_id="spiffe://dns.example/registry", dns_names=(bad,))
    with pytest.raises(ConfigError, match=r"entries\[0\]\.dns_names"):
        parse_entries(f"entries:\n  - {{spiffe_id: spiffe://dns.example/r, selectors: {{uid: 0}}, dns_names: ['{bad}']}}\n")
