"""One controller's imitation OpenStack API services, in one process.

    python -m benchmarks.kolla_scenarios.api --ip 127.0.0.11 --vip 127.0.0.10 [--db] [--amqp]

Serves, on the controller's own address and the services' real ports:

- keystone (5000): POST /v3/auth/tokens issues a token (X-Subject-Token), stored
  in memcached through the VIP as keystone's token cache is; GET /healthcheck.
- nova (8774): GET / (version document), GET /v2.1/servers/detail and
  GET /v2.1/servers/{id} read the database, POST /v2.1/servers writes it and
  casts an RPC message to the conductor through RabbitMQ, as nova-api does.
- glance (9292): GET /v2/images; neutron (9696): GET /v2.0/ports; both from
  memory, with bodies of the size a small cloud returns.

Every request but the health checks carries X-Auth-Token, looked up in
memcached (keystonemiddleware's cache; a miss is accepted, standing in for
the validation call to keystone). The database and the broker are reached
only through the VIP, so a proxy's failover is what the services feel. Without
--db or --amqp (the smoke test's cloud) those parts are skipped.

Database connections are pooled and pinged on checkout, reconnecting once if
the ping fails (oslo.db's pessimistic disconnect handling); the AMQP connection
is kept and re-opened once when a publish fails (oslo.messaging reconnects).
A request that still fails gets a 500, which locust counts as a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import time
import uuid
from typing import Any

import aiohttp.web as web
import aiomysql
import aiormq

APP_USER, APP_PASSWORD, DATABASE = "app", "app-pw", "app"
KEYSTONE, NOVA, GLANCE, NEUTRON = 5000, 8774, 9292, 9696
DB_PORT, AMQP_PORT, MEMCACHED_PORT = 3306, 5672, 11211

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.instances (
    id INT AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    host VARCHAR(64) NOT NULL,
    vm_state VARCHAR(32) NOT NULL,
    created_at DATETIME NOT NULL
)
"""


def server_body(row: tuple[Any, ...], host: str) -> dict[str, Any]:
    """A server as nova's 2.1 API shows it (about 1.5 kB of JSON)."""
    _id, uuid_, name, _host, vm_state, created = row
    link = f"http://{host}:{NOVA}/v2.1/servers/{uuid_}"
    return {
        "id": uuid_,
        "name": name,
        "status": "ACTIVE" if vm_state == "active" else "BUILD",
        "tenant_id": "9c7a1a8e5b0f4d6f8e2a3b4c5d6e7f80",
        "user_id": "f1e2d3c4b5a697887766554433221100",
        "metadata": {},
        "hostId": "3d8c6f1f0c8e4b5a9a7e6d5c4b3a2918",
        "image": {"id": "0c1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8", "links": []},
        "flavor": {"vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0, "swap": 0},
        "created": str(created),
        "updated": str(created),
        "addresses": {
            "private": [
                {"version": 4, "addr": "10.1.0.12", "OS-EXT-IPS:type": "fixed"},
                {"version": 6, "addr": "fd00::f816:3eff:fe3a:1", "OS-EXT-IPS:type": "fixed"},
            ]
        },
        "accessIPv4": "",
        "accessIPv6": "",
        "links": [{"rel": "self", "href": link}, {"rel": "bookmark", "href": link}],
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": "",
        "key_name": None,
        "OS-SRV-USG:launched_at": str(created),
        "OS-SRV-USG:terminated_at": None,
        "security_groups": [{"name": "default"}],
        "OS-EXT-STS:task_state": None,
        "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:power_state": 1,
        "os-extended-volumes:volumes_attached": [],
        "locked": False,
        "description": None,
        "tags": [],
        "trusted_image_certificates": None,
        "server_groups": [],
    }


def images(count: int = 25) -> dict[str, Any]:
    return {
        "images": [
            {
                "id": str(uuid.UUID(int=i + 1)),
                "name": f"cirros-0.6.{i}-x86_64-disk",
                "status": "active",
                "visibility": "public",
                "protected": False,
                "container_format": "bare",
                "disk_format": "qcow2",
                "size": 21430272,
                "virtual_size": 117440512,
                "checksum": "c8fc807773e5354afe61636071771906",
                "os_hash_algo": "sha512",
                "os_hash_value": "1103b92ce8ad966e41235a4de260deb7" * 4,
                "owner": "9c7a1a8e5b0f4d6f8e2a3b4c5d6e7f80",
                "min_ram": 0,
                "min_disk": 0,
                "tags": [],
                "created_at": "2026-11-30T10:00:00Z",
                "updated_at": "2026-11-30T10:00:05Z",
                "self": f"/v2/images/{uuid.UUID(int=i + 1)}",
                "file": f"/v2/images/{uuid.UUID(int=i + 1)}/file",
                "schema": "/v2/schemas/image",
            }
            for i in range(count)
        ],
        "schema": "/v2/schemas/images",
        "first": "/v2/images",
    }


def ports(count: int = 40) -> dict[str, Any]:
    return {
        "ports": [
            {
                "id": str(uuid.UUID(int=1000 + i)),
                "name": "",
                "network_id": "a87cc70a-3e15-4acf-8205-9b711a3531b7",
                "tenant_id": "9c7a1a8e5b0f4d6f8e2a3b4c5d6e7f80",
                "mac_address": f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}",
                "admin_state_up": True,
                "status": "ACTIVE",
                "device_id": str(uuid.UUID(int=5000 + i)),
                "device_owner": "compute:nova",
                "fixed_ips": [
                    {
                        "subnet_id": "a0304c3a-4f08-4c43-88af-d796509c97d2",
                        "ip_address": f"10.1.0.{i + 2}",
                    }
                ],
                "allowed_address_pairs": [],
                "extra_dhcp_opts": [],
                "security_groups": ["f0ac4394-7e4a-4409-9701-ba8be283dbc3"],
                "binding:vnic_type": "normal",
                "binding:host_id": "compute1",
                "port_security_enabled": True,
                "created_at": "2026-11-30T10:00:00Z",
                "updated_at": "2026-11-30T10:00:05Z",
                "revision_number": 3,
            }
            for i in range(count)
        ]
    }


class Database:
    """A pool of connections to the Galera VIP, pinged on checkout."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.idle: list[Any] = []

    async def _connect(self) -> Any:
        return await aiomysql.connect(
            host=self.host,
            port=DB_PORT,
            user=APP_USER,
            password=APP_PASSWORD,
            db=DATABASE,
            autocommit=True,
            connect_timeout=5,
        )

    async def run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.idle.pop() if self.idle else await self._connect()
        try:
            try:
                await conn.ping(reconnect=False)
            except Exception:
                conn.close()
                conn = await self._connect()
            async with conn.cursor() as cur:
                await asyncio.wait_for(cur.execute(sql, args), 30)
                rows = list(await cur.fetchall())
        except BaseException:
            conn.close()
            raise
        self.idle.append(conn)
        return rows


class Rpc:
    """oslo.messaging's cast: one kept connection, re-opened once on failure."""

    def __init__(self, host: str) -> None:
        self.url = f"amqp://guest:guest@{host}:{AMQP_PORT}/"
        self.channel: Any = None
        self.connection: Any = None
        self.lock = asyncio.Lock()

    async def _open(self) -> Any:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 1)
        self.connection = await asyncio.wait_for(aiormq.connect(self.url), 5)
        channel = await self.connection.channel()
        await channel.exchange_declare("nova", exchange_type="topic")
        self.channel = channel
        return channel

    async def cast(self, body: bytes) -> None:
        for attempt in (1, 2):
            try:
                async with self.lock:
                    channel = self.channel
                    if channel is None or channel.is_closed or attempt == 2:
                        channel = await self._open()
                await asyncio.wait_for(
                    channel.basic_publish(body, exchange="nova", routing_key="conductor"), 5
                )
                return
            except Exception:
                self.channel = None
                if attempt == 2:
                    raise


class Memcache:
    """get and set over one kept connection to memcached; errors are cache misses."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.lock = asyncio.Lock()

    async def _call(self, line: bytes) -> bytes:
        async with self.lock:
            try:
                if self.streams is None:
                    self.streams = await asyncio.wait_for(
                        asyncio.open_connection(self.host, MEMCACHED_PORT), 2
                    )
                reader, writer = self.streams
                writer.write(line)
                head = await asyncio.wait_for(reader.readline(), 2)
                if head.startswith(b"VALUE"):
                    data = await reader.readline()
                    await reader.readline()  # END
                    return data.rstrip()
                return b""
            except (TimeoutError, OSError, ConnectionError):
                if self.streams is not None:
                    self.streams[1].close()
                self.streams = None
                return b""

    async def set(self, key: str, value: str) -> None:
        data = value.encode()
        await self._call(b"set %s 0 300 %d\r\n%s\r\n" % (key.encode(), len(data), data))

    async def get(self, key: str) -> str:
        return (await self._call(b"get %s\r\n" % key.encode())).decode()


class Controller:
    def __init__(self, ip: str, vip: str, db: bool, amqp: bool) -> None:
        self.ip = ip
        self.db = Database(vip) if db else None
        self.rpc = Rpc(vip) if amqp else None
        self.cache = Memcache(vip)
        self.images = images()
        self.ports = ports()
        self.memory_servers: list[tuple[Any, ...]] = [
            (i, str(uuid.UUID(int=9000 + i)), f"vm-{i}", ip, "active", "2026-11-30 10:00:00")
            for i in range(20)
        ]

    def fault(self, exc: BaseException) -> web.Response:
        body = {"computeFault": {"code": 500, "message": f"{type(exc).__name__}: {exc}"[:200]}}
        return web.json_response(body, status=500)

    async def authorized(self, request: web.Request) -> bool:
        token = request.headers.get("X-Auth-Token", "")
        if len(token) != 64:
            return False
        await self.cache.get(f"keystone-token-{token}")
        return True

    # -- keystone ---------------------------------------------------------------

    async def issue_token(self, request: web.Request) -> web.Response:
        auth = await request.json()
        user = auth["auth"]["identity"]["password"]["user"]["name"]
        token = secrets.token_hex(32)
        await self.cache.set(f"keystone-token-{token}", user)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        catalog = [
            {
                "type": kind,
                "name": name,
                "endpoints": [
                    {"interface": "public", "region": "RegionOne", "url": f"http://vip:{port}"}
                ],
            }
            for kind, name, port in (
                ("identity", "keystone", KEYSTONE),
                ("compute", "nova", NOVA),
                ("image", "glance", GLANCE),
                ("network", "neutron", NEUTRON),
            )
        ]
        body = {
            "token": {
                "methods": ["password"],
                "user": {"name": user, "id": "f1e2d3c4b5a697887766554433221100"},
                "project": {"name": "demo", "id": "9c7a1a8e5b0f4d6f8e2a3b4c5d6e7f80"},
                "roles": [{"name": "member", "id": "9fe2ff9ee4384b1894a90878d3e92bab"}],
                "issued_at": now,
                "expires_at": now,
                "catalog": catalog,
            }
        }
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})

    # -- nova -------------------------------------------------------------------

    async def nova_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"versions": [{"id": "v2.1", "status": "CURRENT", "version": "2.95"}]}
        )

    async def servers(self, limit: int, uuid_: str | None = None) -> list[tuple[Any, ...]]:
        if self.db is None:
            if uuid_ is not None:  # every controller knows every server, as with a database
                return [(0, uuid_, "vm", self.ip, "active", "2026-11-30 10:00:00")]
            return self.memory_servers[-limit:]
        if uuid_ is not None:
            return await self.db.run(
                "SELECT id, uuid, name, host, vm_state, created_at FROM instances WHERE uuid=%s",
                (uuid_,),
            )
        return await self.db.run(
            "SELECT id, uuid, name, host, vm_state, created_at FROM instances "
            "ORDER BY id DESC LIMIT %s",
            (limit,),
        )

    async def list_servers(self, request: web.Request) -> web.Response:
        if not await self.authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            rows = await self.servers(20)
        except Exception as exc:
            return self.fault(exc)
        return web.json_response({"servers": [server_body(r, self.ip) for r in rows]})

    async def show_server(self, request: web.Request) -> web.Response:
        if not await self.authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            rows = await self.servers(1, request.match_info["id"])
        except Exception as exc:
            return self.fault(exc)
        if not rows:
            return web.json_response({"itemNotFound": {"code": 404}}, status=404)
        return web.json_response({"server": server_body(rows[0], self.ip)})

    async def create_server(self, request: web.Request) -> web.Response:
        if not await self.authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        spec = (await request.json())["server"]
        new = str(uuid.uuid4())
        created = time.strftime("%Y-%m-%d %H:%M:%S")
        row = (0, new, spec["name"], self.ip, "building", created)
        try:
            if self.db is not None:
                # Quota check then insert, as nova-api does before casting to conductor.
                await self.db.run("SELECT COUNT(*) FROM instances WHERE vm_state='building'")
                await self.db.run(
                    "INSERT INTO instances (uuid, name, host, vm_state, created_at) "
                    "VALUES (%s, %s, %s, 'building', %s)",
                    (new, spec["name"], self.ip, created),
                )
            else:
                self.memory_servers.append(row)
                del self.memory_servers[:-100]
            if self.rpc is not None:
                await self.rpc.cast(
                    b'{"method": "build_and_run_instance", "uuid": "%s"}' % new.encode()
                )
        except Exception as exc:
            return self.fault(exc)
        return web.json_response({"server": server_body(row, self.ip)}, status=202)

    # -- glance, neutron --------------------------------------------------------

    async def list_images(self, request: web.Request) -> web.Response:
        if not await self.authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(self.images)

    async def list_ports(self, request: web.Request) -> web.Response:
        if not await self.authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(self.ports)

    async def healthcheck(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def neutron_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [{"id": "v2.0", "status": "CURRENT"}]})

    def apps(self) -> dict[int, web.Application]:
        keystone, nova, glance, neutron = (web.Application() for _ in range(4))
        keystone.router.add_post("/v3/auth/tokens", self.issue_token)
        keystone.router.add_get("/healthcheck", self.healthcheck)
        nova.router.add_get("/", self.nova_versions)
        nova.router.add_get("/v2.1/servers/detail", self.list_servers)
        nova.router.add_get("/v2.1/servers/{id}", self.show_server)
        nova.router.add_post("/v2.1/servers", self.create_server)
        glance.router.add_get("/healthcheck", self.healthcheck)
        glance.router.add_get("/v2/images", self.list_images)
        neutron.router.add_get("/", self.neutron_versions)
        neutron.router.add_get("/v2.0/ports", self.list_ports)
        return {KEYSTONE: keystone, NOVA: nova, GLANCE: glance, NEUTRON: neutron}


async def serve(args: argparse.Namespace) -> None:
    controller = Controller(args.ip, args.vip, args.db, args.amqp)
    runners = []
    for port, app in controller.apps().items():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.ip, port, reuse_address=True).start()
        runners.append(runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"controller {args.ip} ready (pid {os.getpid()})", flush=True)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ip", required=True)
    parser.add_argument("--vip", required=True)
    parser.add_argument("--db", action="store_true", help="use the Galera VIP")
    parser.add_argument("--amqp", action="store_true", help="cast through RabbitMQ")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
