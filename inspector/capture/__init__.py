"""Offline path: read captures, decode frames, track flows, reassemble TCP, run HTTP sessions.

    CaptureReader (reader.py)      pcap / pcapng / gzip, format from magic bytes -> Frame
    PacketDecoder (decode.py)      link layer -> IPv4/IPv6 (+ fragments.py) -> TCP/UDP -> Packet
    FlowTable (flows.py)           5-tuple -> Flow, Community ID, idle/closed expiry, caps
    TcpReassembler (tcp.py)        per-direction ordered bytes, gaps, overlaps -> stream callbacks
    StreamRouter (router.py)       content-based protocol detection -> HTTP/1, HTTP/2, raw parsers
    Http1Session / Http2Session    sans-IO HTTP sessions -> inspector.http session events
"""
