"""`ztid generate k8s`: schema-valid objects, and rules that admit exactly the pairs the policy allows.

Two small evaluators stand in for the cluster: one applies Kubernetes NetworkPolicy semantics
(a pod selected by no policy of a direction is open in that direction; otherwise some rule must
admit the peer), the other Istio's ALLOW evaluation (no ALLOW policy selects the workload ⇒ allow;
otherwise a rule's principals must match). Both are compared with Policy.decide on every pair.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ztid.cli import main
from ztid.errors import UsageError
from ztid.generate.k8s import generate_k8s
from ztid.generate.matrix import sa_id
from ztid.policy import Policy, parse_policy
from ztid.spiffeid import SpiffeId

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
LABEL = "app.kubernetes.io/component"
K8S_VERSION = "1.32"
NAMESPACES = ["team-a", "team-b"]

SHARED = """\
version: 1
trust_domain: ai-platform.example
identities:
  - spiffe://ai-platform.example/ns/{tenant}/sa/{component}
  - spiffe://ai-platform.example/{component}/{workload...}
tenancy: shared
mode: audit
components:
  training: {allow: {registry: [write], data-store: [read]}, deny: [inference]}
  inference: {allow: {registry: [read]}}
  registry: {}
  data-store: {}
"""


# -- evaluators ----------------------------------------------------------------------------------

def _labels_match(selector, labels):
    assert set(selector) <= {"matchLabels"}, f"evaluator knows only matchLabels: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod(ns, component=None, **labels):
    labels = dict(labels)
    if component:
        labels[LABEL] = component
    return {"ns": ns, "labels": labels}


def _peer_admits(peer, pod, policy_ns):
    if "ipBlock" in peer:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    ns_ok = pod["ns"] == policy_ns if ns_sel is None else _labels_match(ns_sel, {"kubernetes.io/metadata.name":
                                                                                  pod["ns"]})
    return ns_ok and (pod_sel is None or _labels_match(pod_sel, pod["labels"]))


def _port_ok(rule, port):
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port[0] and p.get("protocol", "TCP") == port[1] for p in ports)


def _direction_allows(nps, subject, peer, direction, port):
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [np for np in nps if np["metadata"]["namespace"] == subject["ns"]
                 and direction in np["spec"]["policyTypes"] and _labels_match(np["spec"]["podSelector"],
                                                                             subject["labels"])]
    if not selecting:
        return True
    for np in selecting:
        for rule in np["spec"].get(key, []):
            if not _port_ok(rule, port):
                continue
            peers = rule.get(peers_key)  # absent: every peer
            if peers is None or any(_peer_admits(p, peer, np["metadata"]["namespace"]) for p in peers):
                return True
    return False


def netpol_allows(nps, src, dst, port=(8080, "TCP")):
    return _direction_allows(nps, src, dst, "Egress", port) and _direction_allows(nps, dst, src, "Ingress", port)


def _principal_matches(pattern, principal):
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return principal.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return principal.endswith(pattern[1:])
    return principal == pattern


def istio_allows(aps, principal, dst):
    selecting = [ap for ap in aps if ap["metadata"]["namespace"] == dst["ns"]
                 and _labels_match(ap["spec"].get("selector", {}), dst["labels"])
                 and ap["spec"].get("action", "ALLOW") == "ALLOW"]
    assert not any(ap["spec"].get("action") == "DENY" for ap in aps)
    if not selecting:
        return True
    for ap in selecting:
        for rule in ap["spec"].get("rules", []):
            sources = [f["source"] for f in rule.get("from", [])]
            if any(any(_principal_matches(p, principal) for p in s.get("principals", [])) for s in sources):
                return True
    return False


def policy_allows(policy: Policy, src_ns, src, dst_ns, dst):
    source, target = sa_id(policy, src_ns, src), sa_id(policy, dst_ns, dst)
    return any((d := policy.decide(source, target, a)).allowed and not d.would_deny for a in policy.actions)


def _kinds(objects, kind):
    return [o for o in objects if o["kind"] == kind]


# -- the round trip ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_policy():
    return parse_policy(SHARED, name="shared.yaml")


@pytest.mark.parametrize("which", ["shipped", "shared"])
def test_networkpolicies_admit_exactly_the_policy_pairs(which, policy, shared_policy):
    pol = policy if which == "shipped" else shared_policy
    gen = generate_k8s(pol, namespaces=NAMESPACES)
    nps = _kinds(gen.objects, "NetworkPolicy")
    comps = sorted(pol.components)
    checked = allowed = 0
    for (sns, src), (dns, dst) in product(product(NAMESPACES, comps), repeat=2):
        want = policy_allows(pol, sns, src, dns, dst)
        got = netpol_allows(nps, _pod(sns, src), _pod(dns, dst))
        assert got == want, f"{sns}/{src} -> {dns}/{dst}: generated {got}, policy {want}"
        checked += 1
        allowed += want
    assert checked == (len(comps) * len(NAMESPACES)) ** 2
    assert 0 < allowed < checked
    if which == "shared":  # shared tenancy crosses namespaces: the generator had to use namespaceSelector
        assert netpol_allows(nps, _pod("team-a", "training"), _pod("team-b", "registry"))


def test_unlabelled_and_foreign_pods_are_denied(policy):
    nps = _kinds(generate_k8s(policy, namespaces=NAMESPACES).objects, "NetworkPolicy")
    assert not netpol_allows(nps, _pod("team-a"), _pod("team-a", "registry"))
    assert not netpol_allows(nps, _pod("team-a", "training"), _pod("team-a"))
    assert not netpol_allows(nps, _pod("elsewhere", "training"), _pod("team-a", "registry"))
    # a namespace without policies cannot reach components nobody may call: that is the default deny's job
    for target in ("inference", "monitoring-admin", "pipeline"):
        assert not netpol_allows(nps, _pod("elsewhere", "x"), _pod("team-a", target))
        without = [o for o in nps if o["metadata"]["name"] != "ztid-default-deny"]
        assert netpol_allows(without, _pod("elsewhere", "x"), _pod("team-a", target))


def test_dns_egress_only_to_kube_dns_port_53(policy):
    nps = _kinds(generate_k8s(policy, namespaces=["team-a"]).objects, "NetworkPolicy")
    dns = _pod("kube-system", **{"k8s-app": "kube-dns"})
    for port in ((53, "UDP"), (53, "TCP")):
        assert _direction_allows(nps, _pod("team-a", "inference"), dns, "Egress", port)
    assert not _direction_allows(nps, _pod("team-a", "inference"), dns, "Egress", (8080, "TCP"))
    assert not _direction_allows(nps, _pod("team-a", "inference"), _pod("kube-system", "x"), "Egress", (53, "UDP"))
    no_dns = _kinds(generate_k8s(policy, namespaces=["team-a"], dns=False).objects, "NetworkPolicy")
    assert not _direction_allows(no_dns, _pod("team-a", "inference"), dns, "Egress", (53, "UDP"))


@pytest.mark.parametrize("which", ["shipped", "shared"])
def test_istio_principals_admit_exactly_the_policy_pairs(which, policy, shared_policy):
    pol = policy if which == "shipped" else shared_policy
    aps = _kinds(generate_k8s(pol, namespaces=NAMESPACES).objects, "AuthorizationPolicy")
    td = pol.trust_domain.name
    comps = sorted(pol.components)
    for (sns, src), (dns, dst) in product(product(NAMESPACES, comps), repeat=2):
        want = policy_allows(pol, sns, src, dns, dst)
        got = istio_allows(aps, f"{td}/ns/{sns}/sa/{src}", _pod(dns, dst))
        assert got == want, f"{sns}/{src} -> {dns}/{dst}: generated {got}, policy {want}"


def test_istio_principals_from_templates(shared_policy, policy):
    aps = _kinds(generate_k8s(shared_policy, namespaces=["team-a"]).objects, "AuthorizationPolicy")
    registry = next(a for a in aps if a["metadata"]["name"] == "ztid-allow-registry")
    principals = registry["spec"]["rules"][0]["from"][0]["source"]["principals"]
    # {tenant}/{component} filled in; /{component}/{workload...} becomes a prefix match (shared tenancy)
    assert principals == ["ai-platform.example/inference/*", "ai-platform.example/ns/team-a/sa/inference",
                          "ai-platform.example/ns/team-a/sa/training", "ai-platform.example/training/*"]
    # isolated tenancy: a tenant-less /training/... ID reaches no tenanted target, so no prefix principal
    aps = _kinds(generate_k8s(policy, namespaces=["team-a"]).objects, "AuthorizationPolicy")
    flat = json.dumps(aps)
    assert "ai-platform.example/training/*" not in flat and "ai-platform.example/ns/team-a/sa/training" in flat


def test_every_namespace_gets_baselines(policy):
    gen = generate_k8s(policy, namespaces=NAMESPACES, ext_authz_provider="ztid-ext-authz", cilium=True)
    for ns in NAMESPACES:
        names = {(o["kind"], o["metadata"]["name"]) for o in gen.objects if o["metadata"]["namespace"] == ns}
        assert {("NetworkPolicy", "ztid-default-deny"), ("PeerAuthentication", "ztid-strict"),
                ("AuthorizationPolicy", "ztid-allow-nothing"), ("AuthorizationPolicy", "ztid-ext-authz"),
                ("CiliumNetworkPolicy", "ztid-default-deny")} <= names
    for o in gen.objects:
        assert o["metadata"]["annotations"]["ztid.io/policy-digest"] == policy.digest


def test_generated_cluster_passes_the_audit(policy, tmp_path):
    """Generated policies + a workload per component: the namespace-posture checks are satisfied."""
    from ztid.audit.k8s import audit_k8s

    gen = generate_k8s(policy, namespaces=["team-a"])
    (tmp_path / "gen.yaml").write_text(gen.to_yaml())
    report = audit_k8s([tmp_path / "gen.yaml", FIXTURES / "platform-good"], policy=policy)
    assert report.findings == ()


# -- schema checks ---------------------------------------------------------------------------------

_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    "matchExpressions": {"type": "array"}}}
_ISTIO_SELECTOR = {"type": "object", "additionalProperties": False, "required": ["matchLabels"], "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}}
_MTLS = {"type": "object", "additionalProperties": False,
         "properties": {"mode": {"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}}}
_STRS = {"type": "array", "items": {"type": "string", "minLength": 1}}


def _obj(properties, *, required=()):
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


def _array(items):
    return {"type": "array", "items": items}


# Field names from istio/api security/v1 (authorization_policy.proto, peer_authentication.proto) and
# cilium/cilium pkg/policy/api (rule.go, ingress.go, egress.go, l4.go): a faithful subset.
_SOURCE = _obj({k: _STRS for k in ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
                                   "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
                                   "notRemoteIpBlocks")})
_SOURCE["minProperties"] = 1
_ISTIO_RULE = _obj({"from": _array(_obj({"source": _SOURCE})), "to": {"type": "array"}, "when": {"type": "array"}})
_CILIUM_PORTS = _obj({
    "ports": _array(_obj({"port": {"type": "string"}, "protocol": {"enum": ["TCP", "UDP", "SCTP", "ANY"]}},
                         required=["port"])),
    "rules": _obj({"dns": _array(_obj({"matchPattern": {"type": "string"}, "matchName": {"type": "string"}}))}),
})
CRD_SCHEMAS = {
    "PeerAuthentication": _obj({"selector": _ISTIO_SELECTOR, "mtls": _MTLS,
                                "portLevelMtls": {"type": "object", "additionalProperties": _MTLS}}),
    "AuthorizationPolicy": _obj({
        "selector": _ISTIO_SELECTOR, "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
        "provider": _obj({"name": {"type": "string"}}, required=["name"]), "rules": _array(_ISTIO_RULE)}),
    "CiliumNetworkPolicy": _obj({
        "endpointSelector": _SELECTOR,
        "ingress": _array(_obj({"fromEndpoints": _array(_SELECTOR), "toPorts": _array(_CILIUM_PORTS)})),
        "egress": _array(_obj({"toEndpoints": _array(_SELECTOR), "toPorts": _array(_CILIUM_PORTS)})),
    }, required=["endpointSelector"]),
}
_API = {"PeerAuthentication": "security.istio.io/v1", "AuthorizationPolicy": "security.istio.io/v1",
        "CiliumNetworkPolicy": "cilium.io/v2"}
_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def test_generated_objects_are_schema_valid(policy, shared_policy):
    for pol in (policy, shared_policy):
        gen = generate_k8s(pol, namespaces=NAMESPACES, cilium=True, ext_authz_provider="ztid")
        objects = list(yaml.safe_load_all(gen.to_yaml()))  # what kubectl would read
        assert objects == [json.loads(json.dumps(o)) for o in gen.objects]
        for o in objects:
            name = o["metadata"]["name"]
            assert len(name) <= 63 and jsonschema.validators.Draft7Validator({"pattern": _DNS1123}).is_valid(name)
            if o["kind"] == "NetworkPolicy":
                kubernetes_validate.validate(o, K8S_VERSION, strict=True)
            else:
                assert o["apiVersion"] == _API[o["kind"]]
                jsonschema.validate(o["spec"], CRD_SCHEMAS[o["kind"]])


def test_crd_schemas_reject_misspelled_fields():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rules": [{"from": [{"source": {"principal": ["x"]}}]}]}, CRD_SCHEMAS["AuthorizationPolicy"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"mtls": {"mode": "STRIKT"}}, CRD_SCHEMAS["PeerAuthentication"])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                      "metadata": {"name": "x"}, "spec": {"podSelector": {}, "policyType": []}},
                                     K8S_VERSION, strict=True)


@pytest.mark.parametrize("platform", ["platform-good", "platform-bad"])
def test_fixture_manifests_are_valid_kubernetes(platform):
    """The fixtures are real manifests: built-in kinds pass the strict Kubernetes schemas."""
    validated = 0
    for path in sorted((FIXTURES / platform).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            group = doc["apiVersion"].rpartition("/")[0]
            if group in ("", "apps", "batch", "networking.k8s.io"):  # built-in kinds; CRDs have no schema here
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                validated += 1
    assert validated >= 8


# -- namespaces and the CLI --------------------------------------------------------------------------

def test_namespaces_from_literal_templates(literal_ns_policy, policy):
    gen = generate_k8s(literal_ns_policy)
    assert {o["metadata"]["namespace"] for o in gen.objects} == {"ml-training"}
    with pytest.raises(UsageError, match="--namespace"):
        generate_k8s(policy)


def test_components_the_templates_cannot_place_get_a_note(literal_ns_policy):
    gen = generate_k8s(literal_ns_policy, namespaces=["ml-training", "other"])
    assert any("'other'" in n for n in gen.notes)
    assert not [o for o in gen.objects if o["metadata"]["namespace"] == "other" and "ingress" in o["spec"]]


def test_cli_stdout_out_dir_and_json(capsys, tmp_path):
    policy_path = str(REPO / "policy.yaml")
    assert main(["generate", "k8s", "--policy", policy_path, "-n", "team-a"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Generated by ztid") and len(list(yaml.safe_load_all(out))) > 10
    assert main(["generate", "k8s", "--policy", policy_path, "-n", "team-a", "-n", "team-b", "--cilium",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml")) == [
        "team-a/cilium.yaml", "team-a/istio.yaml", "team-a/networkpolicies.yaml",
        "team-b/cilium.yaml", "team-b/istio.yaml", "team-b/networkpolicies.yaml"]
    capsys.readouterr()
    assert main(["generate", "k8s", "--policy", policy_path, "-n", "team-a", "--json", "--no-istio"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and {o["kind"] for o in doc["objects"]} == {"NetworkPolicy"}


@pytest.mark.parametrize("argv", [
    ["generate", "k8s", "--policy", "/nonexistent/policy.yaml", "-n", "a"],
    ["generate", "k8s", "--policy", str(REPO / "policy.yaml")],
    ["generate", "k8s", "--policy", str(REPO / "policy.yaml"), "-n", "Bad_Namespace!"],
    ["generate", "k8s"],
    ["generate"],
])
def test_cli_errors_exit_2(capsys, argv):
    assert main(argv) == 2


# -- property: random policies ---------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_COMPONENTS = ["a", "b", "c", "d"]


@st.composite
def _policies(draw):
    tenancy = draw(st.sampled_from(["isolated", "shared"]))
    mode = draw(st.sampled_from(["enforce", "audit"]))
    lines = ["version: 1", "trust_domain: td.example", "identities:",
             "  - spiffe://td.example/ns/{tenant}/sa/{component}",
             "  - spiffe://td.example/{component}/{workload...}",
             f"tenancy: {tenancy}", f"mode: {mode}", "components:"]
    for src in _COMPONENTS:
        allow, deny = {}, []
        for tgt in _COMPONENTS:
            choice = draw(st.sampled_from(["none", "deny", "read", "write", "both"]))
            if choice == "deny":
                deny.append(tgt)
            elif choice != "none":
                allow[tgt] = ["read", "write"] if choice == "both" else [choice]
        body = {}
        if allow:
            body["allow"] = allow
        if deny:
            body["deny"] = deny
        lines.append(f"  {src}: {json.dumps(body)}")
    return parse_policy("\n".join(lines) + "\n", name="random.yaml")


@settings(max_examples=25, deadline=None)
@given(pol=_policies())
def test_property_generated_rules_equal_decide(pol):
    gen = generate_k8s(pol, namespaces=["n1", "n2"])
    nps, aps = _kinds(gen.objects, "NetworkPolicy"), _kinds(gen.objects, "AuthorizationPolicy")
    for (sns, src), (dns, dst) in product(product(["n1", "n2"], _COMPONENTS), repeat=2):
        want = policy_allows(pol, sns, src, dns, dst)
        assert netpol_allows(nps, _pod(sns, src), _pod(dns, dst)) == want, (sns, src, dns, dst)
        assert istio_allows(aps, f"td.example/ns/{sns}/sa/{src}", _pod(dns, dst)) == want, (sns, src, dns, dst)
        # the /{component}/{workload...} identities: Istio admits them exactly when decide() does
        flat = SpiffeId.parse(f"spiffe://td.example/{src}/w")
        want_flat = any((d := pol.decide(flat, sa_id(pol, dns, dst), a)).allowed and not d.would_deny
                        for a in pol.actions)
        assert istio_allows(aps, f"td.example/{src}/w", _pod(dns, dst)) == want_flat, (src, dns, dst)
