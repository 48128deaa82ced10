"""WorkloadApiSource against the dev agent: snapshots, rotation, fail-closed revocation, bundle replacement."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from ztid.devca import DevCA
from ztid.errors import SourceError, UsageError, VerificationError
from ztid.source import SvidSource
from ztid.source_workload import WorkloadApiSource, parse_endpoint
from ztid.spiffeid import SpiffeId, TrustDomain
from ztid.svid import verify_x509_svid

TRAINING = SpiffeId.parse("spiffe://dev.local/training")
DEV = TrustDomain("dev.local")


@pytest.fixture
def sources():
    made: list[WorkloadApiSource] = []

    def make(*args, **kwargs) -> WorkloadApiSource:
        kwargs.setdefault("timeout", 5)
        src = WorkloadApiSource(*args, **kwargs)
        made.append(src)
        return src

    yield make
    for s in made:
        s.close()


def _pem(svid) -> bytes:
    return svid.chain_pem()


def test_snapshot_is_the_agents_svid_and_bundle(agent, ca_dir, sources) -> None:
    src = sources(agent.endpoint)
    assert isinstance(src, SvidSource)
    snap = src.snapshot()
    assert snap.svid.spiffe_id == TRAINING
    assert set(snap.bundles) == {DEV}
    assert snap.bundles[DEV].x509_authorities == (DevCA.load(ca_dir).root,)
    assert verify_x509_svid(_pem(snap.svid), snap.bundles).spiffe_id == TRAINING


def test_endpoint_comes_from_the_environment(agent, sources, monkeypatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", agent.endpoint)
    assert sources().snapshot().svid.spiffe_id == TRAINING


def test_explicit_endpoint_wins_over_the_environment(agent, sources, monkeypatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/agent.sock")
    assert sources(agent.endpoint).snapshot().svid.spiffe_id == TRAINING


def test_no_endpoint_or_no_socket_is_a_clear_error(monkeypatch, short_dir) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    with pytest.raises(UsageError, match="SPIFFE_ENDPOINT_SOCKET"):
        WorkloadApiSource()
    with pytest.raises(SourceError, match="does not exist"):
        WorkloadApiSource(f"unix://{short_dir}/none.sock", timeout=1)


def test_rotation_publishes_a_new_generation(start_agent, sources, wait) -> None:
    agent = start_agent(ttl=dt.timedelta(seconds=2))
    src = sources(agent.endpoint)
    first = src.snapshot()
    got = []
    src.subscribe(got.append)
    wait(lambda: got, what="a rotation pushed by the agent")
    assert got[0].generation > first.generation
    assert got[0].svid.leaf.serial_number != first.svid.leaf.serial_number
    assert src.snapshot().generation >= got[0].generation


def test_permission_denied_mid_stream_fails_closed_then_recovers(start_agent, short_dir, entries_yaml, my_uid, sources, wait) -> None:
    sel = short_dir / "sel.yaml"
    granted = entries_yaml(("spiffe://dev.local/training", {"uid": my_uid}))
    sel.write_text(granted)
    agent = start_agent(selectors=sel)
    src = sources(agent.endpoint, backoff=(0.1, 0.5))
    before = src.snapshot()
    errors: list[SourceError] = []
    src.subscribe(lambda s: None, on_error=errors.append)

    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid + 1})))  # revoke this caller
    agent.reload()

    def denied() -> bool:
        try:
            src.snapshot()
        except SourceError:
            return True
        return False

    wait(denied, what="the source to stop serving")
    with pytest.raises(SourceError, match="PERMISSION_DENIED"):
        src.snapshot()
    # on_error runs on the source's thread right after it closed (closing first is the point), so wait for it.
    wait(lambda: errors, what="on_error to be called")
    assert "PERMISSION_DENIED" in str(errors[0])

    sel.write_text(granted)  # granted again: the source retries with backoff and resumes
    agent.reload()
    after = wait(lambda: not denied() and src.snapshot(), what="the source to resume")
    assert after.generation > before.generation


def test_picked_svid_revoked_fails_closed_even_if_another_remains(start_agent, short_dir, entries_yaml, my_uid, sources, wait) -> None:
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid}), ("spiffe://dev.local/eval", {"uid": my_uid})))
    agent = start_agent(selectors=sel)
    src = sources(agent.endpoint, spiffe_id="spiffe://dev.local/eval")
    assert str(src.snapshot().svid.spiffe_id) == "spiffe://dev.local/eval"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid})))
    agent.reload()
    wait(lambda: src.last_error is not None and "no longer issues" in str(src.last_error), what="redaction of the picked SVID")
    with pytest.raises(SourceError):
        src.snapshot()


def test_no_entry_at_start_raises_after_timeout(start_agent, short_dir, entries_yaml, my_uid) -> None:
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid + 1})))
    agent = start_agent(selectors=sel)
    with pytest.raises(SourceError, match="PERMISSION_DENIED"):
        WorkloadApiSource(agent.endpoint, timeout=1.0)


def test_ca_removed_from_the_bundle_is_no_longer_trusted(start_agent, ca_dir, sources, wait) -> None:
    other = DevCA.create("dev.local")  # e.g. the previous root during a CA rotation
    own_pem = (ca_dir / "bundle.pem").read_bytes()
    (ca_dir / "bundle.pem").write_bytes(own_pem + other.root.public_bytes(serialization.Encoding.PEM))
    agent = start_agent()
    src = sources(agent.endpoint)
    peer = other.issue("spiffe://dev.local/old-peer")
    assert len(src.snapshot().bundles[DEV].x509_authorities) == 2
    verify_x509_svid(_pem(peer), src.snapshot().bundles)  # trusted while its root is in the bundle

    (ca_dir / "bundle.pem").write_bytes(own_pem)
    agent.reload()
    wait(lambda: len(src.snapshot().bundles[DEV].x509_authorities) == 1, what="the bundle without the removed CA")
    assert other.root not in src.snapshot().bundles[DEV].x509_authorities
    with pytest.raises(VerificationError):
        verify_x509_svid(_pem(peer), src.snapshot().bundles)


def test_federated_bundle_added_then_removed_is_replaced_not_merged(start_agent, ca_dir, sources, wait) -> None:
    partner = DevCA.create("partner.example")
    agent = start_agent()
    src = sources(agent.endpoint)
    assert set(src.snapshot().bundles) == {DEV}
    (ca_dir / "federation").mkdir()
    fed = ca_dir / "federation" / "partner.example.pem"
    fed.write_bytes(partner.root.public_bytes(serialization.Encoding.PEM))
    agent.reload()
    wait(lambda: TrustDomain("partner.example") in src.snapshot().bundles, what="the federated bundle")
    verify_x509_svid(_pem(partner.issue("spiffe://partner.example/svc")), src.snapshot().bundles)
    fed.unlink()
    agent.reload()
    wait(lambda: TrustDomain("partner.example") not in src.snapshot().bundles, what="the federated bundle to be dropped")
    with pytest.raises(VerificationError):
        verify_x509_svid(_pem(partner.issue("spiffe://partner.example/svc")), src.snapshot().bundles)


def test_agent_restart_keeps_the_valid_svid_and_then_resumes(start_agent, ca_dir, short_dir, sources, wait) -> None:
    from ztid.agent import DevAgent

    agent = start_agent(name="restart")
    src = sources(agent.endpoint, backoff=(0.1, 0.3))
    first = src.snapshot()
    agent.stop(grace=None)
    wait(lambda: src.last_error is not None, what="the stream error to be noticed")
    assert src.snapshot() is first  # an unreachable agent does not revoke a valid SVID
    again = DevAgent(ca_dir, short_dir / "restart.sock", spiffe_id=str(TRAINING)).start()
    try:
        wait(lambda: src.snapshot().generation > first.generation, what="updates from the restarted agent")
    finally:
        again.stop(grace=None)


def test_closed_source_raises(agent) -> None:
    src = WorkloadApiSource(agent.endpoint, timeout=5)
    src.close()
    with pytest.raises(SourceError, match="closed"):
        src.snapshot()


@pytest.mark.parametrize("value", ["unix:///tmp/agent.sock", "unix:/tmp/agent.sock", "tcp://127.0.0.1:8000", "tcp://[::1]:8000"])
def test_valid_endpoints(value: str) -> None:
    assert parse_endpoint(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "blah", "http://127.0.0.1:8000", "spiffe://dev.local/x", "unix:opaque", "unix://", "unix://host/abs",
     "unix:///p?q", "unix:///p#f", "unix://user:@/p", "tcp://localhost:8000", "tcp://1.2.3.4", "tcp://1.2.3.4:5/path",
     "tcp://1.2.3.4:5?q", "tcp://1.2.3.4:5#f", "tcp://u:p@1.2.3.4:5", "tcp://1.2.3.4:99999"],
)
def test_invalid_endpoints_name_the_rule(value: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_endpoint(value)
    assert repr(value) in str(info.value) or not value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"(unix|tcp):/{0,3}[a-z0-9.:/@?#\[\]]{0,30}", fullmatch=True))
def test_parse_endpoint_returns_input_or_raises_usage_error(value: str) -> None:
    try:
        assert parse_endpoint(value) == value
    except UsageError:
        pass


def test_jwt_svid_and_bundles_from_the_same_source(agent, sources) -> None:
    from ztid.jwtsvid import validate_jwt_svid

    src = sources(agent.endpoint)
    token = src.fetch_jwt_svid("data-store")
    bundles = src.fetch_jwt_bundles()
    assert set(bundles) == {DEV} and bundles[DEV].jwt_authorities and not bundles[DEV].x509_authorities
    assert validate_jwt_svid(token, bundles, "data-store").spiffe_id == TRAINING
    with pytest.raises(UsageError):
        src.fetch_jwt_svid([])


def test_jwt_svid_is_refused_once_the_source_failed_closed(start_agent, short_dir, entries_yaml, my_uid, sources, wait) -> None:
    sel = short_dir / "sel.yaml"
    sel.write_text(entries_yaml(("spiffe://dev.local/training", {"uid": my_uid})))
    agent = start_agent(selectors=sel)
    src = sources(agent.endpoint)
    assert src.fetch_jwt_svid(["a", "b"])
    agent.state.set_entries(())
    wait(lambda: src.last_error is not None, what="fail closed")
    with pytest.raises(SourceError):
        src.fetch_jwt_svid("a")
