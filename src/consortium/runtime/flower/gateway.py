"""Members reach the Fleet API and nothing else.

Flower 1.41's SuperLink serves its three APIs on one HTTPS port: the **Fleet** API (where
SuperNodes register, pull messages and push replies), the **Control** API (``flwr run``,
``flwr supernode register``: unauthenticated unless OIDC is set up) and the **ServerApp**
(runtime) API. Whoever reaches that port with the CA certificate can use all three. So the
SuperLink listens on loopback only, and members reach it through this gateway: a reverse
proxy on the public address that forwards ``POST /v1/fleet/<call>`` and answers every other
request with 404. SuperNode authentication is unaffected: a SuperNode signs its requests in
HTTP headers, which the gateway passes through unchanged, and the SuperLink checks them.

    consortium flower superlink --certificates certs --fleet-host 0.0.0.0

starts both (the SuperLink on 127.0.0.1, the gateway on the public address) and refuses a
SuperLink on a public address unless ``--public-control-api`` says the operator has put their
own authentication in front of it. An nginx or HAProxy front that forwards only
``/v1/fleet/`` does the same job (docs/flower.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

#: The only requests forwarded: a Fleet API call, by its exact path shape.
FLEET_CALL = re.compile(r"/v1/fleet/[a-z][a-z-]{0,63}")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}
NOT_SERVED = "not served here: this address serves only Flower's Fleet API\n"


def fleet_gateway(
    upstream: str,
    ca_cert: str | Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """An ASGI app forwarding Fleet API calls to ``upstream`` (``https://127.0.0.1:9093``).

    ``ca_cert`` verifies the SuperLink's certificate (``None`` with an ``http://`` upstream,
    for ``--insecure`` trials only); ``transport`` replaces the network (tests).
    """
    upstream = upstream.rstrip("/")
    verify: bool | ssl.SSLContext = True
    if ca_cert is not None:
        verify = ssl.create_default_context(cafile=str(ca_cert))
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(600.0, connect=30.0)
        async with httpx.AsyncClient(verify=verify, timeout=timeout, transport=transport) as client:
            state["client"] = client
            yield

    async def forward(request: Request) -> Response:
        path = request.url.path
        if request.method != "POST" or request.url.query or not FLEET_CALL.fullmatch(path):
            return PlainTextResponse(NOT_SERVED, status_code=404)
        client = state["client"]
        headers = [(k, v) for k, v in request.headers.raw if k.decode().lower() not in _HOP_BY_HOP]
        outgoing = client.build_request(
            "POST", upstream + path, headers=headers, content=await request.body()
        )
        try:
            reply = await client.send(outgoing, stream=True)
        except httpx.HTTPError as err:
            return PlainTextResponse(f"SuperLink unreachable: {err}\n", status_code=502)
        back = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(
            reply.aiter_raw(),
            status_code=reply.status_code,
            headers=back,
            background=BackgroundTask(reply.aclose),
        )

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def serve_fleet_gateway(
    host: str,
    port: int,
    upstream: str,
    *,
    ca_cert: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
) -> None:
    """Serve :func:`fleet_gateway` on ``host:port`` (HTTPS with ``certfile``/``keyfile``)
    until interrupted."""
    app = fleet_gateway(upstream, ca_cert)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=None if certfile is None else str(certfile),
        ssl_keyfile=None if keyfile is None else str(keyfile),
        log_level="warning",
        lifespan="on",
    )
    uvicorn.Server(config).run()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- `consortium flower gateway` and `consortium flower superlink` ----------------------------


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``gateway`` and ``superlink`` subcommands to ``consortium flower``."""
    gw = sub.add_parser("gateway", help="serve members the Fleet API of a loopback SuperLink")
    gw.add_argument("--listen", required=True, help="HOST:PORT members dial")
    gw.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    _tls_options(gw)

    sl = sub.add_parser(
        "superlink",
        help="a SuperLink on loopback plus a Fleet gateway members can reach",
        description="Start flower-superlink with its Control, ServerApp and Fleet APIs on "
        "loopback and a gateway that serves members the Fleet API only.",
    )
    sl.add_argument("--host", default="127.0.0.1", help="SuperLink address (default loopback)")
    sl.add_argument("--port", type=int, default=9093, help="SuperLink port (default 9093)")
    sl.add_argument("--fleet-host", default="0.0.0.0", help="address members dial")
    sl.add_argument("--fleet-port", type=int, default=9092, help="port members dial")
    sl.add_argument(
        "--public-control-api",
        action="store_true",
        help="allow a SuperLink --host that is not loopback: its Control API (runs, node "
        "registration) is then reachable from the network; only with your own "
        "authentication in front of it",
    )
    sl.add_argument("--database", help="Flower state database file (default: in memory)")
    _tls_options(sl)


def _tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certificates", type=Path, help="folder with ca.crt, server.pem, server.key")
    p.add_argument("--insecure", action="store_true", help="plain HTTP (closed test networks)")


def _tls(args: argparse.Namespace) -> tuple[Path, Path, Path] | None:
    if args.insecure:
        return None
    if args.certificates is None:
        raise ValueError("give --certificates DIR (ca.crt, server.pem, server.key) or --insecure")
    files = tuple(args.certificates / n for n in ("ca.crt", "server.pem", "server.key"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return files  # type: ignore[return-value]


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


def run_command(args: argparse.Namespace) -> int:
    """Run ``gateway`` or ``superlink``; raises ``ValueError`` for what the operator can fix."""
    if args.command == "superlink" and not is_loopback(args.host) and not args.public_control_api:
        raise ValueError(
            f"--host {args.host} would expose the SuperLink's Control API (run submission and "
            "node registration, unauthenticated in Flower 1.41) to the network; members need "
            "only the Fleet gateway (--fleet-host). Pass --public-control-api if your own "
            "authentication guards that address"
        )
    tls = _tls(args)
    if args.command == "gateway":
        host, port = _split(args.listen)
        scheme = "http" if tls is None else "https"
        serve_fleet_gateway(
            host,
            port,
            f"{scheme}://{args.superlink}",
            ca_cert=None if tls is None else tls[0],
            certfile=None if tls is None else tls[1],
            keyfile=None if tls is None else tls[2],
        )
        return 0
    return _superlink(args, tls)


def _superlink(args: argparse.Namespace, tls: tuple[Path, Path, Path] | None) -> int:
    argv = [_bin("flower-superlink"), "--host", args.host, "--port", str(args.port)]
    argv.append("--disable-runtime-dependency-installation")
    if tls is None:
        argv.append("--insecure")
    else:
        argv += ["--ssl-ca-certfile", str(tls[0]), "--ssl-certfile", str(tls[1])]
        argv += ["--ssl-keyfile", str(tls[2]), "--enable-supernode-auth"]
    if args.database:
        argv += ["--database", args.database]
    link = subprocess.Popen(argv)
    upstream_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"SuperLink (Control, ServerApp, Fleet) on {args.host}:{args.port}; members dial the "
        f"Fleet gateway on {args.fleet_host}:{args.fleet_port}",
        flush=True,
    )
    try:
        serve_fleet_gateway(
            args.fleet_host,
            args.fleet_port,
            f"{'http' if tls is None else 'https'}://{upstream_host}:{args.port}",
            ca_cert=None if tls is None else tls[0],
            certfile=None if tls is None else tls[1],
            keyfile=None if tls is None else tls[2],
        )
    finally:
        link.send_signal(signal.SIGTERM)
        try:
            link.wait(15)
        except subprocess.TimeoutExpired:
            link.kill()
            link.wait()
    return 0


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name
