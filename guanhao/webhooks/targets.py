"""Where webhooks may be sent (issue 8 item 4: endpoints are not a door into the private network).

Outside sandbox mode only https:// URLs whose host resolves to public addresses only (ipaddress'
`is_global`: not loopback, RFC 1918, link-local, unique-local, shared, reserved …) — checked when an
endpoint is registered, and again for every connection a delivery opens, after DNS: the delivery
connects to the very address that was checked, so a name that rebinds to 127.0.0.1 in between
reaches nothing. In sandbox mode http:// and loopback addresses are allowed as well (local receivers).
The resolver is a parameter, so the check is tested without real DNS.
"""

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import httpcore
import httpx

from guanhao.i18n import Message, _l

Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class Refused(Exception):
    """The URL or address may not receive webhooks; `reason` says why."""

    def __init__(self, reason: Message):
        super().__init__(reason.render("en"))
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """A URL that passed the check at registration."""

    url: str
    host: str
    addresses: tuple[str, ...]


def _scheme(scheme: str, *, sandbox: bool) -> None:
    if scheme != "https" and not (sandbox and scheme == "http"):
        raise Refused(_l("Webhook URLs must use https://"))


def _allowed(address: str, *, sandbox: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast:
        return False
    return ip.is_global or (sandbox and ip.is_loopback)


def addresses(host: str, port: int, *, sandbox: bool, resolve: Resolver) -> list[str]:
    """Every address `host` stands for, each one allowed — or Refused. An IP literal is its own address."""
    try:
        ipaddress.ip_address(host)
        found = [host]
    except ValueError:
        try:
            found = resolve(host, port)
        except OSError:
            raise Refused(_l("The host {host} does not resolve", host=host)) from None
    if not found:
        raise Refused(_l("The host {host} does not resolve", host=host))
    for address in found:
        if not _allowed(address, sandbox=sandbox):
            raise Refused(
                _l("The host {host} resolves to {address}, which is not a public address", host=host, address=address)
            )
    return found


def check(url: str, *, sandbox: bool, resolve: Resolver = system_resolver) -> Target:
    """A URL webhooks may be registered for (see the module's docstring), or Refused."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise Refused(_l("The webhook URL is not a valid URL")) from None
    _scheme(parsed.scheme, sandbox=sandbox)
    if not parsed.host:
        raise Refused(_l("The webhook URL is not a valid URL"))
    if parsed.userinfo:
        raise Refused(_l("A webhook URL may not carry a user name or password"))
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    found = addresses(parsed.host, port, sandbox=sandbox, resolve=resolve)
    return Target(url=url, host=parsed.host, addresses=tuple(found))


# ---------------------------------------------------------------- the delivery client


class _GuardedBackend(httpcore.NetworkBackend):
    """Opens each connection to an address `addresses` allowed, never to a name resolved again later."""

    def __init__(self, *, sandbox: bool, resolve: Resolver):
        self._check = partial(addresses, sandbox=sandbox, resolve=resolve)
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        [address, *_] = self._check(host, port)
        return self._inner.connect_tcp(
            address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise Refused(_l("Webhooks are sent over TCP only"))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, *, sandbox: bool, resolve: Resolver):
        super().__init__(trust_env=False)
        self._sandbox = sandbox
        # httpx builds its connection pool without a way to pass a network backend: the same pool, with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(sandbox=sandbox, resolve=resolve),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _scheme(request.url.scheme, sandbox=self._sandbox)
        return super().handle_request(request)


def client(*, sandbox: bool, resolve: Resolver = system_resolver) -> httpx.Client:
    """The HTTP client deliveries go through: no redirects, no proxies from the environment, and every
    connection checked after DNS (Refused is raised from the request)."""
    return httpx.Client(transport=_GuardedTransport(sandbox=sandbox, resolve=resolve), follow_redirects=False)
