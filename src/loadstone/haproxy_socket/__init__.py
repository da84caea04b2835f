"""HAProxy's runtime API (the `stats socket`), for the tools that speak it.

`proxies` names loadstone's listeners as HAProxy proxies, `stats` writes
`show info`/`show stat`/`show servers state`, `cli` is the sans-IO command
session (bytes in, bytes out) and `server` the thin asyncio server around it.
"""
