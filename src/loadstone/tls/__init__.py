"""TLS: certificates (loading, names, expiry), the listener side (termination with
SNI, ALPN, client certificates) and the server side (re-encryption, TLS checks).

    certificates   read and check PEM files; names for SNI; expiry
    termination    a listener's SSL contexts, the SNI choice and the handshake counters
    upstream       SSL contexts for connections to servers and for checks
    material       what `check`, `run` and a reload load: all or nothing, by config value
    native         the same material handed to the native engine's OpenSSL contexts
    clienthello    a sans-IO ClientHello reader (SNI passthrough)

The pure data path uses Python's ssl module through asyncio; the native engine
terminates and re-encrypts in its C workers with OpenSSL (engine/tls.c,
tls_upstream.c), from what `native` builds out of the material checked here.
"""
