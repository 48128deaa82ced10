"""The deploy files parse, agree with each other, and set the fields that keep the mesh fail-closed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from ztid.policy import load_policy
from ztid.sidecar.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "sidecar"


def envoy() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "envoy.yaml").read_text())


def k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def hcm_and_filters() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (listener,) = envoy()["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"], hcm["typed_config"]["http_filters"]


def test_envoy_yaml_is_a_valid_v3_bootstrap() -> None:
    # Register the typed_config messages, then parse strictly: unknown fields or wrong types fail.
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

    bootstrap = json_format.ParseDict(envoy(), bootstrap_pb2.Bootstrap())
    assert len(bootstrap.static_resources.clusters) == 3


def test_ext_authz_filter_fails_closed() -> None:
    _, filters = hcm_and_filters()
    names = [f["name"] for f in filters]
    assert names.index("envoy.filters.http.ext_authz") < names.index("envoy.filters.http.router")
    authz = filters[names.index("envoy.filters.http.ext_authz")]["typed_config"]
    assert authz["failure_mode_allow"] is False  # explicit, not just the default
    assert authz["transport_api_version"] == "V3"
    assert authz["include_peer_certificate"] is True
    assert authz["status_on_error"]["code"] == "Forbidden"
    timeout = float(authz["grpc_service"]["timeout"].rstrip("s"))
    assert 0 < timeout <= 1.0
    assert "failure_mode_allow_header_add" not in authz


def test_client_identity_plumbing() -> None:
    (listener,) = envoy()["static_resources"]["listeners"]
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context_sds_secret_config"]["name"] == "ALL"  # SPIRE: SPIFFE validator
    hcm, _ = hcm_and_filters()
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"  # a client's own XFCC never passes


def test_authz_cluster_reaches_the_sidecar_socket_over_http2() -> None:
    clusters = {c["name"]: c for c in envoy()["static_resources"]["clusters"]}
    authz = clusters["ztid_authz"]
    path = authz["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"]
    options = authz["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    cfg = load_config(DEPLOY / "sidecar.yaml")
    assert cfg.listen == (f"unix:{path}",)


def test_route_context_extensions_name_real_components_and_actions() -> None:
    hcm, _ = hcm_and_filters()
    policy = load_policy(ROOT / "policy.yaml")
    seen = 0
    for vhost in hcm["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            per = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz")
            if per:
                ext = per["check_settings"]["context_extensions"]
                assert ext["ztid.target"] in policy.components and ext["ztid.action"] in policy.actions
                seen += 1
    assert seen >= 1


def test_sidecar_yaml_validates_and_matches_envoy() -> None:
    cfg = load_config(DEPLOY / "sidecar.yaml")
    assert cfg.workload_api and cfg.decision_log and cfg.metrics
    assert cfg.extauthz.trust_xfcc is False
    assert cfg.extauthz.require_certificate is True  # envoy.yaml sends include_peer_certificate


def test_configmaps_are_generated_from_the_sources() -> None:
    spec = importlib.util.spec_from_file_location("gen_configmaps", DEPLOY / "k8s" / "gen_configmaps.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DEPLOY / "k8s" / "configmaps.yaml").read_text() == module.render(), "re-run sidecar/k8s/gen_configmaps.py"
    maps = {d["metadata"]["name"]: d["data"] for d in k8s("configmaps.yaml")}
    assert maps["ztid-policy"]["policy.yaml"] == (ROOT / "policy.yaml").read_text()


def test_deployment_wiring() -> None:
    (dep,) = k8s("deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg = load_config(DEPLOY / "sidecar.yaml")
    assert volumes["spiffe-workload-api"]["csi"]["driver"] == "csi.spiffe.io"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    for c in containers.values():
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
    socket_dir = os.path.dirname(cfg.listen[0][len("unix:"):])
    for name in ("envoy", "ztid-authz"):
        mounts = {m["name"]: m for m in containers[name]["volumeMounts"]}
        assert mounts["ztid-socket"]["mountPath"] == socket_dir
        assert mounts["spiffe-workload-api"]["mountPath"] == os.path.dirname(cfg.workload_api.removeprefix("unix://"))
    ztid = {m["name"]: m for m in containers["ztid-authz"]["volumeMounts"]}
    assert "subPath" not in ztid["ztid-policy"]  # a subPath mount would never see ConfigMap updates
    assert ztid["ztid-policy"]["mountPath"] == os.path.dirname(cfg.policy)
    assert "--probe" in containers["ztid-authz"]["readinessProbe"]["exec"]["command"]
    assert pod["terminationGracePeriodSeconds"] > cfg.drain_seconds
    assert containers["envoy"]["args"][1] == "/etc/envoy/envoy.yaml"
    assert dep["spec"]["template"]["metadata"]["labels"]["ztid.io/workload"] == "true"


def test_the_pods_spiffe_id_is_the_registry_component() -> None:
    (sa,) = k8s("serviceaccount.yaml")
    (dep,) = k8s("deployment.yaml")
    (csid,) = k8s("clusterspiffeid.yaml")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    spiffe_id = csid["spec"]["spiffeIDTemplate"].replace("{{ .TrustDomain }}", "ai-platform.example") \
        .replace("{{ .PodMeta.Namespace }}", dep["metadata"]["namespace"]) \
        .replace("{{ .PodSpec.ServiceAccountName }}", sa["metadata"]["name"])
    ident = load_policy(ROOT / "policy.yaml").identify(spiffe_id)
    assert (ident.component, ident.tenant) == ("registry", "ml")


def test_network_policy_is_default_deny() -> None:
    docs = {d["metadata"]["name"]: d for d in k8s("networkpolicy.yaml")}
    deny = docs["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    ingress = docs["registry-ingress"]["spec"]["ingress"]
    assert {p["port"] for rule in ingress for p in rule["ports"]} == {8443, 9102}


def test_kustomization_lists_existing_files_and_dockerfile_runs_unprivileged() -> None:
    (kust,) = k8s("kustomization.yaml")
    for name in kust["resources"]:
        assert (DEPLOY / "k8s" / name).is_file(), name
    docker = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in docker and 'ENTRYPOINT ["ztid"]' in docker


@pytest.mark.parametrize("name", ["namespace.yaml", "serviceaccount.yaml", "clusterspiffeid.yaml", "deployment.yaml",
                                  "service.yaml", "networkpolicy.yaml", "configmaps.yaml"])
def test_every_manifest_has_kind_and_name(name: str) -> None:
    for doc in k8s(name):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
