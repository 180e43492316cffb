"""mitmproxy addon for the plain-mitmdump baseline of bench_live.py: nothing but the switch that
makes mitmproxy speak HTTP/2 with prior knowledge (h2c) to the named cleartext upstreams, which
plain mitmdump has no option for (`inspector proxy --upstream h2c://` does the same in its addon).

    mitmdump -s benchmarks/mitm_h2c.py --set h2c_upstreams=127.0.0.1:8001 --set connection_strategy=lazy \\
        --mode reverse:http://127.0.0.1:8001@9001
"""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx


class H2cUpstreams:
    def load(self, loader: Any) -> None:
        loader.add_option("h2c_upstreams", str, "", "HOST:PORT,... spoken to in h2c (HTTP/2 prior knowledge)")

    def server_connect(self, data: Any) -> None:
        server = data.server
        if server.tls or server.address is None:
            return
        if f"{server.address[0]}:{server.address[1]}" in ctx.options.h2c_upstreams.split(","):
            server.alpn = b"h2"


addons = [H2cUpstreams()]
