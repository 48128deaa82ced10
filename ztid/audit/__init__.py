"""Audits: the tamper-evident decision log, the Kubernetes zero-trust audit, pipeline artifact checks."""
