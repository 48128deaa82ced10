"""Generators: policy.yaml compiled into other systems' policy (Kubernetes NetworkPolicy, Istio, Cilium)."""
