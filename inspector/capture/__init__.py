"""Offline path: read captures, decode frames, track flows, reassemble TCP, run HTTP sessions.

    CaptureReader (reader.py)      pcap / pcapng / gzip, format from magic bytes -> Frame
    PacketDecoder (decode.py)      link layer -> IPv4/IPv6 (+ fragments.py) -> TCP/UDP -> Packet
    FlowTable (flows.py)           5-tuple -> Flow, Community ID, idle/closed expiry, caps
    TcpReassembler (tcp.py)        per-direction ordered bytes, gaps, overlaps -> stream callbacks
    StreamRouter (router.py)       content-based protocol detection -> HTTP/1, HTTP/2, TLS, raw parsers;
                                   SOCKS (socks.py) and CONNECT tunnels
    Http1Session / Http2Session    sans-IO HTTP sessions -> inspector.http session events
    TlsSession (tls.py)            TLS records, hellos, decryption (tls_crypto.py) with key logs
                                   (tls_keylog.py) -> plaintext for a nested router
"""
