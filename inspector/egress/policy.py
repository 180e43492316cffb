"""The egress allowlists and the decision on a destination. Pure: strings in, the `egress` object out.

The site config's `egress:` section (inspector/data/default-config.yaml documents it)::

    egress:
      hosts: [pypi.org, "*.internal.example.com"]      # any request to these hosts
      buckets: [ml-models-prod]                         # S3 buckets, on the s3_endpoints
      s3_endpoints: ["s3.amazonaws.com", "*.amazonaws.com"]
      registries: [huggingface.co/acme/*, registry.ollama.ai/library/*]   # host/repository

Patterns are shell-style (fnmatch), case-insensitive; a host pattern with a port (`host:8443`)
matches that port only. A request is allowed when its host matches `hosts`; or its host is an S3
endpoint and its bucket (virtual-hosted `bucket.s3...` or the first path segment) matches
`buckets`; or its host is a registry's and the repository its path names (Hugging Face
`/<repo>/resolve/...`, `/api/models/<repo>`, OCI `/v2/<name>/manifests|blobs/...`,
inspector.protocols.modelhub) matches the entry. A CONNECT only shows the host: it is allowed
when the host is in `hosts`, and let through (`matched: registry_host` / `s3_endpoint`) when it
is a registry's or an S3 endpoint, so the requests inside can be decided one by one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inspector.protocols.modelhub import parse_hub_path, path_of_target

SECTION_KEYS = ("hosts", "buckets", "s3_endpoints", "registries")
DEFAULT_S3_ENDPOINTS = ("s3.amazonaws.com", "*.amazonaws.com")
MAX_HOST_CHARS = 255


@dataclass(frozen=True, slots=True)
class Registry:
    entry: str
    host: str
    repo: str  # pattern


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPolicy:
    hosts: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    s3_endpoints: tuple[str, ...] = DEFAULT_S3_ENDPOINTS
    registries: tuple[Registry, ...] = ()

    @classmethod
    def from_section(cls, section: Any) -> EgressPolicy:
        """The policy of an `egress:` config section. Raises ValueError with the reason."""
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ValueError("egress: must be a map with hosts:, buckets:, s3_endpoints:, registries:")
        unknown = [k for k in section if k not in SECTION_KEYS]
        if unknown:
            raise ValueError(f"unknown egress key(s) {', '.join(map(str, unknown))} (known: {', '.join(SECTION_KEYS)})")
        lists: dict[str, tuple[str, ...]] = {}
        for key in SECTION_KEYS:
            value = section.get(key)
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"egress.{key} must be a list of non-empty strings")
            lists[key] = tuple(v.strip().lower() for v in value)
        registries = []
        for entry in lists.pop("registries", ()):
            host, _, repo = entry.partition("/")
            registries.append(Registry(entry, host, repo or "*"))
        return cls(registries=tuple(registries), **lists)

    # -- decisions ------------------------------------------------------------------------------

    def decide_connect(self, host: str, port: int) -> dict[str, Any]:
        host = _host(host)
        obj: dict[str, Any] = {"host": host, "port": port, "phase": "connect"}
        entry = self._host_entry(self.hosts, host, port)
        if entry is not None:
            return {**obj, "allowed": True, "matched": "host", "entry": entry}
        for registry in self.registries:
            if _host_matches(registry.host, host, port):
                return {**obj, "allowed": True, "matched": "registry_host", "entry": registry.entry}
        if self.buckets:
            entry = self._host_entry(self.s3_endpoints, host, port)
            if entry is not None:
                return {**obj, "allowed": True, "matched": "s3_endpoint", "entry": entry}
        return {**obj, "allowed": False}

    def decide_request(self, host: str, port: int, path: str) -> dict[str, Any]:
        host = _host(host)
        obj: dict[str, Any] = {"host": host, "port": port, "phase": "request"}
        entry = self._host_entry(self.hosts, host, port)
        if entry is not None:
            return {**obj, "allowed": True, "matched": "host", "entry": entry}
        hub = None
        registries = [r for r in self.registries if _host_matches(r.host, host, port)]
        if registries:
            hub = parse_hub_path(path)
            if hub is not None:
                obj["repo"] = hub.repo
                for registry in registries:
                    if fnmatch.fnmatchcase(hub.repo.lower(), registry.repo):
                        return {**obj, "allowed": True, "matched": "registry", "entry": registry.entry}
        if self._host_entry(self.s3_endpoints, host, port) is not None:
            bucket = _bucket(host, path)
            if bucket:
                obj["bucket"] = bucket
                for pattern in self.buckets:
                    if fnmatch.fnmatchcase(bucket.lower(), pattern):
                        return {**obj, "allowed": True, "matched": "bucket", "entry": pattern}
        return {**obj, "allowed": False}

    @staticmethod
    def _host_entry(patterns: tuple[str, ...], host: str, port: int) -> str | None:
        for pattern in patterns:
            if _host_matches(pattern, host, port):
                return pattern
        return None


def _host(host: str) -> str:
    return host.strip().lower().rstrip(".")[:MAX_HOST_CHARS]


def _host_matches(pattern: str, host: str, port: int) -> bool:
    if ":" in pattern and not pattern.startswith("["):
        return fnmatch.fnmatchcase(f"{host}:{port}", pattern)
    return fnmatch.fnmatchcase(host, pattern)


def _bucket(host: str, path: str) -> str | None:
    """Virtual-hosted (`bucket.s3.region.amazonaws.com`) or path-style bucket."""
    marker = host.find(".s3.")
    if marker < 0 and ".s3-" in host:
        marker = host.find(".s3-")
    if marker > 0:
        return host[:marker]
    segment = path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
    return segment or None


def egress_policy_from_config(config: Any) -> EgressPolicy:
    """The policy of a loaded site config (inspector.rules.Config). Raises ValueError."""
    return EgressPolicy.from_section(getattr(config, "egress", None))


def split_authority(authority: str, default_port: int) -> tuple[str, int]:
    """`host:port` / `[v6]:port` / `host` -> (host, port)."""
    value = authority.strip()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end], value[end + 1:]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = value.partition(":")
    port = int(port_text) if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 else default_port
    return host, port


def egress_decision(policy: EgressPolicy, http: dict[str, Any]) -> dict[str, Any]:
    """The `egress` object of an offline HTTP record (its `http` object): a CONNECT is decided on
    its authority, a request on its Host and path (absolute-form targets included)."""
    url = str(http.get("url") or "")
    host = str(http.get("hostname") or "")
    port = http.get("http_port")
    if http.get("http_method") == "CONNECT":
        name, number = split_authority(url, 443)
        return policy.decide_connect(name or host, number)
    path = path_of_target(url)
    if not host and path != url:  # absolute-form target: the host is in it
        host = split_authority(url.split("://", 1)[1].split("/", 1)[0], 80)[0]
    if not isinstance(port, int):
        port = 443 if url.startswith("https://") else 80
    return policy.decide_request(host, port, path)
