"""Caps on everything a peer or a capture controls. One object, passed down, never global.

Every parser takes its caps from a :class:`Limits`; hitting a cap is counted (see
`inspector.counters`) and, where it changes what we can see, reported as an anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    # capture
    max_packet_bytes: int = 256 * 1024  # a record claiming more is corrupt (pcap/pcapng)
    # IPv4 fragments
    max_fragment_sets: int = 4096
    max_fragment_bytes: int = 65535 + 1024
    max_fragment_total_bytes: int = 16 * 1024 * 1024  # all fragment sets together
    fragment_timeout: float = 30.0
    # flows and reassembly
    max_flows: int = 200_000
    flow_idle_timeout: float = 600.0
    tcp_closed_linger: float = 60.0  # a closed flow absorbs late retransmissions (Suricata: 60 s)
    max_out_of_order_bytes: int = 2 * 1024 * 1024  # per direction, held waiting for a gap to fill
    max_out_of_order_segments: int = 2048
    # HTTP
    max_header_bytes: int = 64 * 1024  # one head (HTTP/1) or one header block (HTTP/2)
    max_headers: int = 256
    max_header_list_size: int = 256 * 1024  # decoded HTTP/2 header list
    max_hpack_table_size: int = 64 * 1024
    max_continuation_frames: int = 256
    max_frame_bytes: int = 16 * 1024 * 1024  # HTTP/2 frame length field (2^24 - 1 is the max)
    max_streams_per_connection: int = 10_000  # open at once; older ones are closed as incomplete
    max_pending_exchanges: int = 1024  # HTTP/1 requests waiting for a response (pipelining)
    max_chunk_line: int = 4096
    body_keep_bytes: int = 1024 * 1024  # body bytes kept per message for parsers
    max_decompressed_bytes: int = 8 * 1024 * 1024  # per body (content coding), then truncated
    max_decompression_ratio: int = 200  # decoded/encoded above this when a cap stops decoding: a bomb
    # gRPC / protobuf
    max_grpc_message_bytes: int = 64 * 1024 * 1024  # a larger length prefix is an anomaly
    grpc_keep_messages: int = 64  # messages kept (payload prefix) per direction per stream
    grpc_keep_message_bytes: int = 256 * 1024  # payload bytes kept per message
    max_protobuf_depth: int = 16
    max_protobuf_fields: int = 10_000
    # raw-TCP ML protocols. TCPStore: a longer key or value gives the direction up; between the
    # libuv server's own limits (8 KiB keys, 8 MiB values) and these, the legacy server's
    # traffic is reported and skipped (never buffered)
    tcpstore_max_key_bytes: int = 1024 * 1024
    tcpstore_max_value_bytes: int = 1024 * 1024 * 1024
    tcpstore_max_keys: int = 128 * 1024  # keys in one MULTI_* / CHECK / WAIT query
    tcpstore_value_keep_bytes: int = 64 * 1024  # value bytes kept for shape detection
    nccl_max_message_bytes: int = 64 * 1024 * 1024
    # TLS (records: RFC 5246 §6.2.3 allows 2^14 + 2048 bytes of ciphertext)
    tls_max_record_bytes: int = 16 * 1024 + 2048
    tls_max_handshake_bytes: int = 128 * 1024  # one ClientHello / ServerHello kept for parsing
    tls_max_pending_bytes: int = 256 * 1024  # ciphertext held until the ServerHello says how to open it
    tls_max_keylog_bytes: int = 64 * 1024 * 1024  # a --keylog file and a capture's secrets blocks, each


DEFAULT_LIMITS = Limits()
