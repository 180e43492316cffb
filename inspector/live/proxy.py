"""`inspector proxy`: the sidecar. mitmproxy's DumpMaster runs in this process with the addon.

    inspector proxy --upstream h2c://127.0.0.1:8001 --listen 0.0.0.0:9001 \\
        --cert server.pem --key server-key.pem [--client-ca clients-ca.pem] \\
        [--rules signatures/] [--config site.yaml] [--eve -] [--metrics 127.0.0.1:9464] \\
        [--redis redis://redis:6379/0] [--fail-open | --fail-closed]

Forward mode (`--mode forward --listen HOST:PORT`, no --upstream) is an explicit proxy for
workloads' outbound traffic (HTTPS_PROXY): mitmproxy's regular mode, TLS intercepted with the CA
in the state directory (`mitmproxy-ca-cert.pem`, which workloads must trust), egress allowlists
from the config's `egress:` section (docs/egress.md).

Upstream schemes: `http://` (HTTP/1.1), `https://` (TLS, verified against the system CAs or
`--upstream-ca`), `h2c://` (cleartext HTTP/2 with prior knowledge: Triton's gRPC port), and
`tcp://` / `tls://` for raw-TCP protocols (PyTorch TCPStore, NCCL bootstrap). Several
`--upstream`/`--listen` pairs serve several ports from one process. The Host header is kept as
the client sent it (S3 SigV4 signs it; `--rewrite-host` sends the upstream's instead).

In-process rather than `mitmdump` as a subprocess: one process to signal (SIGHUP reloads rules
and reopens the EVE file; SIGTERM stops), one to measure, and option errors are reported before
anything listens. The addon is the same one `mitmdump -s addons/inspector_addon.py` loads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from inspector.cpus import process_count
from inspector.live.options import DEFAULT_METRICS, parse_hostport

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

UPSTREAM_SCHEMES = ("http", "https", "h2c", "tcp", "tls")


class Route(NamedTuple):
    """One listener and the upstream it forwards to."""

    scheme: str  # http, https, h2c
    host: str
    port: int
    listen_host: str
    listen_port: int

    @property
    def mode(self) -> str:
        scheme = "http" if self.scheme == "h2c" else self.scheme
        host = f"[{self.host}]" if ":" in self.host else self.host
        listen_host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"reverse:{scheme}://{host}:{self.port}@{listen_host}:{self.listen_port}"

    def describe(self) -> str:
        return f"{self.listen_host}:{self.listen_port} -> {self.scheme}://{self.host}:{self.port}"


def parse_upstream(url: str) -> tuple[str, str, int]:
    """`h2c://host:port` -> ("h2c", host, port). Raises ValueError with the reason."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in UPSTREAM_SCHEMES:
        raise ValueError(f"upstream {url!r}: the scheme must be one of {', '.join(UPSTREAM_SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"upstream {url!r} names no host")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"upstream {url!r}: a path is not supported (the client's path is forwarded)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"upstream {url!r}: {exc}") from None
    if port is None and scheme in ("tcp", "tls"):
        raise ValueError(f"upstream {url!r}: a {scheme}:// upstream needs a port")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def parse_routes(upstreams: list[str], listens: list[str]) -> list[Route]:
    if not upstreams:
        raise ValueError("--upstream is required")
    if len(listens) != len(upstreams):
        raise ValueError(f"{len(upstreams)} --upstream but {len(listens)} --listen: give one --listen per upstream")
    routes = []
    for upstream, listen in zip(upstreams, listens, strict=True):
        scheme, host, port = parse_upstream(upstream)
        listen_host, listen_port = parse_hostport(listen)
        routes.append(Route(scheme, host, port, listen_host, listen_port))
    return routes


def write_private(path: str | Path, data: bytes, *, atomic: bool = False) -> None:
    """Write a file readable by its owner only (keys, learned baselines). `atomic`: write a
    temporary file beside it and rename it over the old one, so a crash mid-write leaves the
    previous file whole."""
    target = Path(path)
    written = target.with_name(f".{target.name}.{os.getpid()}.tmp") if atomic else target
    fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(written, 0o600)
        if atomic:
            os.replace(written, target)
    except BaseException:
        if atomic:
            written.unlink(missing_ok=True)
        raise


def combined_pem(cert: str, key: str, state_dir: Path) -> Path:
    """mitmproxy wants the key and the certificate chain in one PEM: write it (0600)."""
    key_pem = Path(key).read_bytes()
    cert_pem = Path(cert).read_bytes()
    if b"PRIVATE KEY-----" not in key_pem:
        raise ValueError(f"--key {key}: no PEM private key in it")
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ValueError(f"--cert {cert}: no PEM certificate in it")
    path = state_dir / "serving.pem"
    write_private(path, key_pem.rstrip() + b"\n" + cert_pem)
    return path


class ForwardRoute(NamedTuple):
    """`--mode forward`: an explicit HTTP(S) proxy for workloads' outbound traffic (egress)."""

    listen_host: str
    listen_port: int
    scheme: str = "forward"

    @property
    def mode(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"regular@{host}:{self.listen_port}"

    def describe(self) -> str:
        return f"{self.listen_host}:{self.listen_port} forward proxy (egress; HTTPS_PROXY=http://this)"


def parse_forward(upstreams: list[str], listens: list[str]) -> list[ForwardRoute]:
    if upstreams:
        raise ValueError("--mode forward takes no --upstream: workloads name their destinations")
    if len(listens) != 1:
        raise ValueError("--mode forward takes one --listen HOST:PORT")
    return [ForwardRoute(*parse_hostport(listens[0]))]


def build_options(args: argparse.Namespace, routes: list[Any], state_dir: Path) -> dict[str, Any]:
    """mitmproxy and inspector option values for the parsed command line."""
    values: dict[str, Any] = {
        "mode": [route.mode for route in routes],
        "confdir": str(state_dir),
        "connection_strategy": "lazy",
        "keep_host_header": not args.rewrite_host,
        "http2": True,
        "inspector_eve": args.eve,
        "inspector_metrics": args.metrics,
        "inspector_fail": "closed" if args.fail_closed else "open",
        "inspector_uninspectable": args.uninspectable,
        "inspector_h2c_upstreams": [f"{r.host}:{r.port}" for r in routes if r.scheme == "h2c"],
    }
    if getattr(args, "mode", "reverse") == "forward":
        values["inspector_egress"] = True
    if getattr(args, "baseline", None):
        values["inspector_baseline"] = args.baseline
    if getattr(args, "baseline_save", None):
        values["inspector_baseline_save"] = args.baseline_save
    if getattr(args, "reload_interval", None):
        values["inspector_reload_interval"] = args.reload_interval
    if args.rules:
        values["inspector_rules"] = list(args.rules)
    if args.config:
        values["inspector_config"] = args.config
    if args.policy:
        values["inspector_policy"] = args.policy
    if args.redis:
        values["inspector_redis"] = args.redis
    if args.client_ca:
        values["inspector_client_ca"] = args.client_ca
    if args.upstream_ca:
        values["ssl_verify_upstream_trusted_ca"] = args.upstream_ca
    if args.upstream_insecure:
        values["ssl_insecure"] = True
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise ValueError("--cert and --key go together")
        values["certs"] = [f"*={combined_pem(args.cert, args.key, state_dir)}"]
    return values


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("hpack", "h2", "asyncio", "urllib3", "redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # mitmproxy logs each client connect/disconnect at INFO: useful at -v only.
    logging.getLogger("mitmproxy.proxy.server").setLevel(logging.INFO if verbosity > 0 else logging.WARNING)


async def _serve(values: dict[str, Any], extra: list[str], routes: list[Route]) -> int:
    from mitmproxy import exceptions, options
    from mitmproxy.tools.dump import DumpMaster

    from inspector.live.addon import InspectorAddon

    opts = options.Options()
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    addon = InspectorAddon()
    master.addons.add(addon)
    try:
        opts.update(**values)
        if extra:
            opts.set(*extra)
    except exceptions.OptionsError as exc:
        print(f"inspector proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    loop = asyncio.get_running_loop()

    def stop() -> None:
        # Connections still open are cancelled on the way out; asyncio reports each as an error.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        master.shutdown()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    loop.add_signal_handler(signal.SIGHUP, addon.reload)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    runtime = addon.runtime
    rules = len(runtime.inspector.engine.ruleset.rules) if runtime is not None else 0
    for route in routes:
        logging.getLogger("inspector.live").warning("inspector proxy: %s (%d rules, EVE to %s)", route.describe(),
                                                    rules, values["inspector_eve"])
        if isinstance(route, ForwardRoute):
            logging.getLogger("inspector.live").warning(
                "inspector proxy: workloads must trust %s", Path(values["confdir"]) / "mitmproxy-ca-cert.pem")
    await master.run()
    return EXIT_OK


def _run(values: dict[str, Any], extra: list[str], routes: list[Any]) -> int:
    try:
        return asyncio.run(_serve(values, extra, routes))
    except SystemExit as exc:  # mitmproxy's errorcheck: errors logged at startup (port in use ...)
        return EXIT_FAILED if exc.code not in (0, None) else EXIT_OK


def cmd_proxy(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose - args.quiet)
    try:
        if getattr(args, "mode", "reverse") == "forward":
            routes: list[Any] = parse_forward(args.upstream or [], args.listen or [])
        else:
            routes = parse_routes(args.upstream or [], args.listen or [])
    except ValueError as exc:
        print(f"inspector proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    owned_state = args.state_dir is None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="inspector-proxy-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        try:
            values = build_options(args, routes, state_dir)
        except (ValueError, OSError) as exc:
            print(f"inspector proxy: {exc}", file=sys.stderr)
            return EXIT_USAGE
        extra = list(args.set or [])
        processes = getattr(args, "processes", 1)
        if processes < 1:
            print("inspector proxy: --processes must be at least 1", file=sys.stderr)
            return EXIT_USAGE
        if processes > 1:
            from inspector.live.processes import run_workers

            if values["inspector_eve"] == "-":
                print("inspector proxy: --processes needs --eve FILE (each process writes its own "
                      "FILE.<n> beside it)", file=sys.stderr)
                return EXIT_USAGE
            if not args.redis:
                logging.getLogger("inspector.live").warning(
                    "inspector proxy: --processes %d without --redis: rate windows are per process", processes)
            return run_workers(processes, values, lambda mine: _run(mine, extra, routes))
        return _run(values, extra, routes)
    finally:
        if owned_state:
            shutil.rmtree(state_dir, ignore_errors=True)


def add_proxy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("reverse", "forward"), default="reverse",
                        help="reverse (default): in front of model servers (--upstream); forward: an HTTP(S) proxy "
                        "for workloads' outbound traffic, egress allowlists from the config (docs/egress.md)")
    parser.add_argument("--baseline", metavar="FILE|online",
                        help="anomaly detection: a baseline from `inspector baseline learn`, or online "
                        "(docs/anomaly.md)")
    parser.add_argument("--reload-interval", type=float, metavar="SECONDS",
                        help="check the rule files, site config and policy every SECONDS and reload them when "
                        "they change, as SIGHUP does (a mounted ConfigMap's updates); default off")
    parser.add_argument("--baseline-save", metavar="FILE",
                        help="write the baseline, with what it learned, to FILE at shutdown and on SIGHUP once "
                        "past its warm-up (--baseline FILE next time goes on from it); with --processes N one "
                        "file per worker (baseline.0.json, ...)")
    parser.add_argument("--upstream", action="append", metavar="URL",
                        help="model server to protect: http://, https://, h2c:// (cleartext HTTP/2, "
                        "Triton's gRPC port), or tcp:// / tls:// for raw TCP protocols (TCPStore, NCCL); "
                        "repeat with --listen for several ports")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="address clients connect to, one per --upstream (the proxy port is meant to be "
                        "reachable: give 0.0.0.0 for a pod)")
    parser.add_argument("--cert", help="PEM certificate (chain) to serve to clients")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument("--client-ca", metavar="FILE",
                        help="require client certificates chaining to these CAs (mTLS); records carry the "
                        "certificate subject as principal.*")
    parser.add_argument("--upstream-ca", metavar="FILE",
                        help="verify https:// upstreams against these CAs (default: the system CAs)")
    parser.add_argument("--upstream-insecure", action="store_true",
                        help="do not verify https:// upstream certificates (testing only)")
    parser.add_argument("--rules", action="append", metavar="PATH",
                        help="rule file or directory (repeatable; default: the shipped signatures/)")
    parser.add_argument("--config", metavar="FILE", help="site config (variables, suppressions)")
    parser.add_argument("--policy", metavar="FILE", help="segmentation policy: zones on records, policy records "
                        "for flows it does not allow")
    parser.add_argument("--eve", default="-", metavar="FILE|-",
                        help="EVE JSON output: a file (reopened on SIGHUP) or - for stdout (default)")
    parser.add_argument("--metrics", default=DEFAULT_METRICS, metavar="HOST:PORT|off",
                        help=f"Prometheus /metrics and /healthz (default {DEFAULT_METRICS})")
    parser.add_argument("--redis", metavar="URL", help="share rate-rule windows across replicas through Redis")
    parser.add_argument("--processes", type=process_count, default=1, metavar="N|auto",
                        help="N sidecar processes behind each port (SO_REUSEPORT; auto: one per usable CPU); EVE "
                        "to FILE.<n>, metrics on port+n; use --redis for rate rules (docs/live.md)")
    fail = parser.add_mutually_exclusive_group()
    fail.add_argument("--fail-open", action="store_true", help="on an internal error, let traffic pass (default)")
    fail.add_argument("--fail-closed", action="store_true", help="on an internal error, block the traffic")
    parser.add_argument("--uninspectable", choices=("block", "alert", "allow"), default="block",
                        help="what to do with bodies or messages that cannot be inspected (default: block)")
    parser.add_argument("--rewrite-host", action="store_true",
                        help="send the upstream's host in Host/:authority instead of the client's")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where mitmproxy keeps its CA and our serving PEM (default: a temporary directory)")
    parser.add_argument("--set", action="append", metavar="OPTION=VALUE",
                        help="any mitmproxy or inspector_* option (repeatable)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")


def add_live_commands(sub: Any) -> None:
    """Register `inspector proxy` and `inspector certs`."""
    from inspector.live.certs import add_certs_command

    proxy = sub.add_parser("proxy", help="run the live sidecar in front of a model server",
                           description="Run the live sidecar: a TLS-terminating reverse proxy that inspects "
                           "and enforces with the same parsers and rules as `inspector analyze`.")
    add_proxy_arguments(proxy)
    proxy.set_defaults(func=cmd_proxy)
    add_certs_command(sub)
