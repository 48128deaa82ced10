"""A model registry over gRPC with ztid: rotating mTLS credentials and per-method authorization.

Run: python examples/grpc_service.py. A throwaway dev CA stands in for SPIRE or `ztid agent`.
"""
from concurrent import futures
from pathlib import Path

import grpc

import ztid
from ztid.bundle import BundleSet
from ztid.devca import DevCA
from ztid.enforce.grpc import AuthzInterceptor, secure_channel, server_credentials
from ztid.source import StaticSource

ca = DevCA.create("ai-platform.example")
def source(path, **kw):  # noqa: E302 - in production: the Workload API source, nothing else changes
    return StaticSource(ca.issue(f"spiffe://ai-platform.example{path}", **kw), BundleSet([ca.bundle()]))

def get_model(request, context):  # noqa: E302 - a plain handler; the interceptor already decided
    return b"weights of " + request

policy = ztid.load_policy(Path(__file__).resolve().parents[1] / "policy.yaml")
registry = source("/registry/main", dns_names=["registry.ml"])   # gRPC clients check a DNS SAN
server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[AuthzInterceptor(policy, registry)])
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("ml.Registry", {
    "GetModel": grpc.unary_unary_rpc_method_handler(get_model),     # Get*/List*: read
    "PutModel": grpc.unary_unary_rpc_method_handler(get_model)})])  # anything else: write
port = server.add_secure_port("127.0.0.1:0", server_credentials(registry))
server.start()

for who, method in (("/inference/llm", "GetModel"), ("/inference/llm", "PutModel"), ("/training/job-7", "PutModel")):
    with secure_channel(f"127.0.0.1:{port}", source=source(who), policy=policy, expect="registry", server_name="registry.ml") as ch:
        try:
            print(who, method, "->", ch.unary_unary(f"/ml.Registry/{method}")(b"resnet", timeout=10).decode())
        except grpc.RpcError as exc:
            print(who, method, "->", exc.code().name, exc.details())
server.stop(None)
