"""``ztid sidecar``: run the Envoy ext_authz server (config file, flags, or both; flags win)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ztid.cli._common import EXIT_NO, EXIT_OK, EXIT_USAGE, add_json_flag, emit, error_exit
from ztid.errors import ConfigError, IdentityError, PolicyError, ZtidError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sidecar`` verb."""
    p = subparsers.add_parser(
        "sidecar", help="run the Envoy ext_authz sidecar (gRPC envoy.service.auth.v3.Authorization)",
        description="Answer Envoy's ext_authz Check calls from policy.yaml. Give --config FILE, or run with no "
                    "file: --policy FILE --bundle FILE --listen unix:PATH|HOST:PORT. Flags override the file. "
                    "SIGHUP reloads the policy; SIGTERM drains in-flight checks and exits 0.",
    )
    p.add_argument("--config", metavar="FILE", help="sidecar YAML config (see sidecar/README.md)")
    p.add_argument("--policy", metavar="FILE", help="policy.yaml")
    p.add_argument("--bundle", action="append", metavar="FILE", help="trust bundle (PEM or SPIFFE JSON); repeatable")
    p.add_argument("--trust-domain", metavar="TD", help="trust domain of JSON --bundle files")
    p.add_argument("--svid", metavar="CERT", help="the sidecar's own SVID chain (signs the decision log)")
    p.add_argument("--svid-key", metavar="KEY", help="its private key")
    p.add_argument("--workload-api", metavar="SOCKET", help="get SVID and bundles from the SPIFFE Workload API")
    p.add_argument("--listen", action="append", metavar="ADDR", help="unix:PATH or HOST:PORT; repeatable")
    p.add_argument("--decision-log", metavar="FILE", help="append every decision to this tamper-evident log")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics here")
    p.add_argument("--reflection", action="store_true", default=None, help="enable gRPC server reflection")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run N processes sharing TCP ports (SO_REUSEPORT); unix sockets and logs get .1, .2, ...")
    p.add_argument("--check-config", action="store_true", help="validate config and policy, print a summary, exit")
    p.add_argument("--probe", action="store_true",
                   help="ask a running sidecar's gRPC health service (first --listen, else the config's): "
                        "0 SERVING, 1 not serving or unreachable (for Kubernetes exec probes)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    add_json_flag(p)
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace) -> Any:
    """The SidecarConfig from ``--config`` and the flags.

    Raises:
        ConfigError: missing or invalid settings.
    """
    from ztid.sidecar.config import SidecarConfig, load_config

    overrides: dict[str, Any] = {
        "policy": args.policy,
        "listen": tuple(args.listen) if args.listen else None,
        "bundles": tuple(args.bundle) if args.bundle else None,
        "trust_domain": args.trust_domain,
        "svid_cert": args.svid,
        "svid_key": args.svid_key,
        "workload_api": args.workload_api,
        "decision_log": args.decision_log,
        "metrics": args.metrics,
        "reflection": args.reflection,
        "workers": args.workers,
    }
    if args.config:
        return load_config(args.config).with_overrides(**overrides)
    if not args.policy:
        raise ConfigError("give --config FILE, or --policy FILE with --bundle FILE (or --workload-api)")
    return SidecarConfig(**{k: v for k, v in overrides.items() if v is not None})


def _probe(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ztid.sidecar.config import load_config, parse_listen

    try:
        address = parse_listen(args.listen[0]) if args.listen else load_config(args.config).listen[0] if args.config \
            else None
    except ConfigError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="config")
    if address is None:
        return error_exit(args, ConfigError("--probe needs --listen ADDR or --config FILE"), code=EXIT_USAGE)
    try:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError as exc:
        emit(args, {"ok": False, "serving": False, "error": str(exc.code())}, f"not serving: {exc.code()}")
        return EXIT_NO
    serving = status == health_pb2.HealthCheckResponse.SERVING
    emit(args, {"ok": serving, "serving": serving}, "serving" if serving else "not serving")
    return EXIT_OK if serving else EXIT_NO


def _run(args: argparse.Namespace) -> int:
    from ztid.policy import load_policy
    from ztid.sidecar.server import Sidecar

    if args.probe:
        return _probe(args)
    try:
        config = build_config(args)
        policy = load_policy(config.policy)  # a broken policy stops the start (exit 2), never a deny-all server
    except (ConfigError, PolicyError, IdentityError) as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="config")
    summary = {
        "ok": True, "listen": list(config.listen), "policy": config.policy, "policy_digest": policy.digest,
        "mode": policy.mode, "decision_log": config.decision_log, "metrics": config.metrics,
        "trust_xfcc": config.extauthz.trust_xfcc, "tls": config.tls, "workers": config.workers,
    }
    if args.check_config:
        emit(args, summary, f"config ok: listen {', '.join(config.listen)}; policy sha256 {policy.digest[:12]} "
                            f"({policy.mode})")
        return EXIT_OK
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def ready(sidecar: Sidecar) -> None:
        ports = {a: p for a, p in sidecar.ports.items() if not a.startswith("unix:")}
        info = dict(summary, ports=ports, metrics_port=sidecar.metrics_port)
        emit(args, info, f"ztid sidecar listening on {', '.join(config.listen)}"
                         + (f" (ports {ports})" if ports else "")
                         + (f"; metrics on port {sidecar.metrics_port}" if sidecar.metrics_port else ""))
        sys.stdout.flush()

    try:
        if config.workers > 1:
            from ztid.sidecar.workers import serve_workers

            return serve_workers(config, ready=ready, log_level=args.log_level)
        asyncio.run(Sidecar(config).serve(ready=ready))
    except ZtidError as exc:
        return error_exit(args, exc, code=EXIT_USAGE, kind="sidecar")
    return EXIT_OK
