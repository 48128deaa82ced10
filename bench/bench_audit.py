"""Cost of ``ztid audit k8s`` on a cluster-sized dump, against just reading that dump.

A synthetic ``kubectl get -o json``-style List (and the same objects as multi-document YAML) of
50 tenant namespaces x 100 Deployments, half of them misconfigured. Reference, measured in the
same run: parsing the same text with the same parser the audit uses (``json.loads`` /
PyYAML's libyaml loader). The ratio shows what the checks add on top of reading the input;
the generator's cost for those 50 namespaces is printed for context.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ztid.audit.k8s import audit_manifests, parse_manifests
from ztid.generate.k8s import generate_k8s
from ztid.policy import load_policy

NAMESPACES = 50
PER_NAMESPACE = 100
REPEAT = 3
POLICY = Path(__file__).resolve().parents[1] / "policy.yaml"


def _objects() -> list[dict]:
    items: list[dict] = []
    for n in range(NAMESPACES):
        ns = f"team-{n}"
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(PER_NAMESPACE):
            bad = i % 2 == 1
            container = {"name": "server", "image": "registry.example/ml/server:1",
                         "env": [{"name": "LOG_LEVEL", "value": "info"}],
                         "resources": {"limits": {"nvidia.com/gpu": 1}}}
            spec: dict = {"serviceAccountName": "inference", "containers": [container]}
            if bad:
                container["env"].append({"name": "HF_TOKEN", "value": "hf_" + "x" * 34})
                container["securityContext"] = {"privileged": True}
                spec["hostNetwork"] = True
            else:
                spec["securityContext"] = {"runAsNonRoot": True}
                spec["automountServiceAccountToken"] = False
            items.append({"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": f"model-{i}", "namespace": ns},
                          "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/component": "inference"}},
                                                "spec": spec}}})
    return items


def _best(fn) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    policy = load_policy(POLICY)
    items = _objects()
    as_json = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    as_yaml = yaml.safe_dump_all(items)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    n = len(items)
    print(f"{n} objects; JSON {len(as_json) / 1e6:.1f} MB, YAML {len(as_yaml) / 1e6:.1f} MB; "
          f"YAML loader {loader.__name__}")
    for label, text, reference in (
        ("json", as_json, lambda: json.loads(as_json)),
        ("yaml", as_yaml, lambda: list(yaml.load_all(as_yaml, Loader=loader))),
    ):
        ref = _best(reference)
        full = _best(lambda: audit_manifests(parse_manifests(text, source=f"dump.{label}"), policy=policy))
        findings = len(audit_manifests(parse_manifests(text), policy=policy).findings)
        print(f"{label}: parse only {ref * 1e3:8.1f} ms   parse+audit {full * 1e3:8.1f} ms   "
              f"ratio {full / ref:5.2f}x   {n / full:8.0f} objects/s   {findings} findings")
    gen = _best(lambda: generate_k8s(policy, namespaces=[f"team-{i}" for i in range(NAMESPACES)]).to_yaml())
    print(f"generate k8s for {NAMESPACES} namespaces: {gen * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
