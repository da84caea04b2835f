"""TLS: certificates (loading, names, expiry), the listener side (termination with
SNI, ALPN, client certificates) and the server side (re-encryption, TLS checks).

    certificates   read and check PEM files; names for SNI; expiry
    termination    a listener's SSL contexts, the SNI choice and the handshake counters
    upstream       SSL contexts for connections to servers and for checks
    material       what `check`, `run` and a reload load: all or nothing, by config value

The pure data path uses Python's ssl module through asyncio; the native engine
has no TLS yet (loadstone.datapath.tcp_frontend sends TLS listeners to the pure path).
"""
