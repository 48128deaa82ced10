"""The catalogue of ``ztid audit k8s`` checks: stable IDs, severities, why, how to fix, scanner names.

IDs never change meaning and are never reused. Scanner names are the equivalent checks of
kube-linter, kubescape and Polaris (research §E4) for comparison runs.
"""

from __future__ import annotations

from ztid.audit.findings import Rule, Severity

__all__ = ["K8S_RULES", "RULES_BY_ID"]

_S = Severity

NO_DEFAULT_DENY = Rule(
    "ZT-K8S-001", "Namespace without a default-deny NetworkPolicy", _S.HIGH,
    "Without a policy selecting every pod for both Ingress and Egress, any pod (a compromised notebook, a "
    "scraped inference pod) can reach training data stores, the model registry and feature stores directly, "
    "and can exfiltrate weights to anywhere the cluster can route.",
    "Add a NetworkPolicy with podSelector: {} and policyTypes: [Ingress, Egress] and no rules, then allow "
    "the paths policy.yaml allows (`ztid generate k8s --policy policy.yaml` writes both).",
    {"kube-linter": "non-isolated-pod", "kubescape": "C-0260 Missing network policy",
     "polaris": "missingNetworkPolicy"})
HOST_NETWORK = Rule(
    "ZT-K8S-002", "Pod uses the host network", _S.HIGH,
    "A hostNetwork pod is not subject to NetworkPolicy, bypasses the mesh sidecar, and can sniff or bind "
    "node ports; RDMA training pods often ask for it, which removes them from every network control at once.",
    "Drop hostNetwork; give RDMA pods a secondary network (Multus/SR-IOV) instead, and protect the tensor "
    "traffic itself with ztid's streaming encryption.",
    {"kube-linter": "host-network", "kubescape": "C-0041 HostNetwork access", "polaris": "hostNetworkSet"})
HOST_PID = Rule(
    "ZT-K8S-003", "Pod shares the host PID namespace", _S.HIGH,
    "hostPID exposes every process on the node, including other tenants' training processes and the "
    "SPIRE agent; their environment and /proc/<pid>/mem hold keys and data.",
    "Remove hostPID: true; use a node-level DaemonSet owned by the platform team for monitoring instead.",
    {"kube-linter": "host-pid", "kubescape": "C-0038 Host PID/IPC privileges", "polaris": "hostPIDSet"})
HOST_IPC = Rule(
    "ZT-K8S-004", "Pod shares the host IPC namespace", _S.HIGH,
    "hostIPC gives access to the node's shared memory, where NCCL and data loaders keep tensors and "
    "batches of other jobs in /dev/shm segments.",
    "Remove hostIPC: true; size the pod's own /dev/shm with an emptyDir of medium Memory.",
    {"kube-linter": "host-ipc", "kubescape": "C-0038 Host PID/IPC privileges", "polaris": "hostIPCSet"})
PRIVILEGED = Rule(
    "ZT-K8S-005", "Privileged container", _S.CRITICAL,
    "A privileged container (init and ephemeral ones too) is root on the node: it reads every GPU's "
    "memory, every mounted dataset and every workload's SVID key. GPU and RDMA images often ask for it "
    "out of habit.",
    "Set securityContext.privileged: false; request devices through the device plugins (nvidia.com/gpu, "
    "rdma/*) and only the capabilities needed (IPC_LOCK for RDMA memory registration).",
    {"kube-linter": "privileged-container", "kubescape": "C-0057 Privileged container",
     "polaris": "runAsPrivileged"})
RUNS_AS_ROOT = Rule(
    "ZT-K8S-006", "Container runs as root", _S.HIGH,
    "runAsUser: 0 or runAsNonRoot: false makes any escape from a model server or a deserialisation bug "
    "in a pickled checkpoint start as root.",
    "Set runAsUser to a non-zero UID and runAsNonRoot: true (pod or container securityContext).",
    {"kube-linter": "run-as-non-root", "kubescape": "C-0013 Non-root containers", "polaris": "runAsRootAllowed"})
ROOT_NOT_FORBIDDEN = Rule(
    "ZT-K8S-007", "Container may run as root", _S.MEDIUM,
    "Without runAsNonRoot: true or a non-zero runAsUser, the image decides, and most CUDA and framework "
    "base images run as root.",
    "Set securityContext.runAsNonRoot: true (pod level covers every container) and a non-zero runAsUser.",
    {"kube-linter": "run-as-non-root", "kubescape": "C-0013 Non-root containers", "polaris": "runAsRootAllowed"})
RDMA = Rule(
    "ZT-K8S-008", "Pod uses RDMA/InfiniBand devices", _S.MEDIUM,
    "RDMA (InfiniBand, RoCE) traffic goes from NIC to NIC, around the kernel network stack, the mesh sidecar "
    "and NetworkPolicy: gradients and tensors cross the fabric in clear text and unauthenticated.",
    "Keep RDMA pods in a namespace of their own tenant, prefer device-plugin resources (rdma/*) over hostPath "
    "/dev/infiniband, and encrypt the tensors with ztid's streaming AEAD keyed from the job's SVIDs.")
NO_SIDECAR = Rule(
    "ZT-K8S-009", "Pod without a mesh sidecar", _S.MEDIUM,
    "Without an Envoy/istio-proxy sidecar (or injection) the pod's traffic is neither mTLS-authenticated "
    "nor authorised by ext_authz: peers cannot be identified by SPIFFE ID.",
    "Enable injection (namespace label istio-injection=enabled or istio.io/rev, pod label "
    "sidecar.istio.io/inject: \"true\") or add the ztid sidecar; never set sidecar.istio.io/inject: \"false\" "
    "on data-plane workloads.")
NOT_STRICT = Rule(
    "ZT-K8S-010", "mTLS is not STRICT", _S.HIGH,
    "Istio defaults to PERMISSIVE: plaintext is accepted beside mTLS, so an attacker inside the cluster "
    "talks to the model registry without any identity.",
    "Apply a PeerAuthentication with mtls.mode: STRICT in istio-system (mesh-wide) or the namespace, and "
    "remove PERMISSIVE/DISABLE overrides (also portLevelMtls).")
NO_ALLOW_NOTHING = Rule(
    "ZT-K8S-011", "No default-deny AuthorizationPolicy", _S.MEDIUM,
    "Istio allows every authenticated request to a workload with no ALLOW policy: mTLS authenticates but "
    "does not authorise.",
    "Add an allow-nothing AuthorizationPolicy (spec: {}) to the namespace (or istio-system for the mesh) and "
    "allow the paths policy.yaml allows (`ztid generate k8s`).")
LEGACY_TOKEN = Rule(
    "ZT-K8S-012", "Legacy service-account token Secret", _S.MEDIUM,
    "A kubernetes.io/service-account-token Secret is a bearer token that never expires and is readable by "
    "anyone who can read Secrets in the namespace (KEP-2799 removes them).",
    "Delete the Secret; use projected, audience-bound, expiring tokens (TokenRequest) or SPIFFE SVIDs.",
    {"kyverno": "deny-secret-service-account-token-type"})
AUTOMOUNT = Rule(
    "ZT-K8S-013", "Service-account token automounted", _S.MEDIUM,
    "Every process in the pod (including a compromised model server) can use the mounted token against the "
    "Kubernetes API; ML workloads rarely need the API at all.",
    "Set automountServiceAccountToken: false on the pod (it overrides the ServiceAccount) or on the "
    "ServiceAccount, and mount a projected token only where the API is needed.",
    {"kube-linter": "default-service-account", "kubescape": "C-0034 Automatic mapping of service account",
     "polaris": "automountServiceAccountToken"})
ENV_SECRET = Rule(
    "ZT-K8S-014", "Credential hard-coded in a manifest", _S.HIGH,
    "API keys (HF_TOKEN, WANDB_API_KEY, AWS keys, database passwords) written into a pod spec or ConfigMap "
    "are readable by everyone who can read the manifest, the Git history and the pod's environment.",
    "Reference a Secret (env.valueFrom.secretKeyRef, mounted as a file), better still a short-lived "
    "credential fetched with the workload's SVID; rotate the exposed value.",
    {"kube-linter": "env-var-secret", "kubescape": "C-0012 Applications credentials in configuration files",
     "polaris": "sensitiveContainerEnvVar"})
EXPOSED_SERVICE = Rule(
    "ZT-K8S-015", "Service exposed outside the cluster", _S.MEDIUM,
    "A LoadBalancer or NodePort service (or externalIPs) reaches the workload around the mesh ingress, so "
    "no mTLS or authorisation applies; an exposed inference or registry endpoint leaks models and data.",
    "Use ClusterIP behind an authenticated gateway; if exposure is intended, restrict "
    "loadBalancerSourceRanges and enforce authorisation at the gateway.",
    {"kube-linter": "exposed-services", "kubescape": "C-0256 External facing"})
NO_IDENTITY = Rule(
    "ZT-K8S-016", "Service account maps to no identity of policy.yaml", _S.HIGH,
    "The workload's SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>) matches no identity "
    "template of the policy, or names a component the policy does not know: every ztid enforcement point "
    "denies it (or only logs it in audit mode), and nobody reviewed what it may reach.",
    "Run the workload under a service account named for its component, in a tenant namespace the identity "
    "templates cover, or add the component to policy.yaml.")
GPU_NAMESPACE = Rule(
    "ZT-K8S-017", "GPUs requested outside the policy's namespaces", _S.HIGH,
    "GPU time is the most valuable resource of an ML cluster and GPU memory holds weights and data; a GPU "
    "workload in a namespace no identity template of the policy covers runs outside zero-trust control.",
    "Move the workload into a tenant namespace the policy's identity templates cover, or stop requesting "
    "nvidia.com/gpu / amd.com/gpu there (and set a ResourceQuota of 0 GPUs for such namespaces).")

K8S_RULES: tuple[Rule, ...] = (
    NO_DEFAULT_DENY, HOST_NETWORK, HOST_PID, HOST_IPC, PRIVILEGED, RUNS_AS_ROOT, ROOT_NOT_FORBIDDEN, RDMA,
    NO_SIDECAR, NOT_STRICT, NO_ALLOW_NOTHING, LEGACY_TOKEN, AUTOMOUNT, ENV_SECRET, EXPOSED_SERVICE, NO_IDENTITY,
    GPU_NAMESPACE,
)
RULES_BY_ID = {r.id: r for r in K8S_RULES}
