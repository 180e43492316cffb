"""Fixtures for the live sidecar tests: certificates, real upstream servers, rule directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.live.certs import cert_pem, key_pem, make_ca, make_leaf
from inspector.live.proxy import write_private


class Certs:
    def __init__(self, directory: Path) -> None:
        ca_cert, ca_key = make_ca("inspector test CA")
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(cert_pem(ca_cert))
        server_cert, server_key = make_leaf(ca_cert, ca_key, ["localhost", "127.0.0.1"], client=False)
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server-key.pem"
        self.server_cert.write_bytes(cert_pem(server_cert) + cert_pem(ca_cert))
        write_private(self.server_key, key_pem(server_key))
        client_cert, client_key = make_leaf(ca_cert, ca_key, ["model-deployer"], client=True)
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client-key.pem"
        self.client_cert.write_bytes(cert_pem(client_cert))
        write_private(self.client_key, key_pem(client_key))
        other_ca, other_key = make_ca("someone else's CA")
        stranger_cert, stranger_key = make_leaf(other_ca, other_key, ["stranger"], client=True)
        self.stranger_cert = directory / "stranger.pem"
        self.stranger_key = directory / "stranger-key.pem"
        self.stranger_cert.write_bytes(cert_pem(stranger_cert))
        write_private(self.stranger_key, key_pem(stranger_key))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def grpc_upstream():
    from live_servers import start_grpc

    server, port, servicer = start_grpc()
    yield port, servicer
    server.stop(0)


@pytest.fixture(scope="session")
def grpc_tls_upstream(certs: Certs):
    from live_servers import start_grpc

    server, port, servicer = start_grpc(cert=certs.server_cert.read_bytes(), key=certs.server_key.read_bytes())
    yield port, servicer
    server.stop(0)


@pytest.fixture(scope="session")
def rest_upstream():
    from live_servers import RestServer

    server = RestServer()
    yield server
    server.stop()
