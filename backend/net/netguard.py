"""An HTTP session for image URLs that refuses private, loopback and link-local addresses.

The check runs inside urllib3's connection setup: the host name is resolved once, every
address it resolves to must be public, and the socket is opened to that checked address. So
each redirect hop is checked, and DNS rebinding (public at check time, private at connect
time) cannot slip through. The LS host itself is always allowed (it is often on a private
network next to us).
"""

from __future__ import annotations

import ipaddress
import socket

import requests
from urllib3.exceptions import ConnectTimeoutError

from backend.errors import ImageFetchError
from backend.images.refs import ForbiddenImage
from backend.net.transport import DeadlineAdapter, DeadlineHTTPConnection, DeadlineHTTPSConnection, bare_session


def is_public(ip: str) -> bool:
    """True for globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class AddressPolicy:
    """Decides which (host, port) a connection may be opened to, and to which IP."""

    def __init__(self, allow_private: bool, always_allowed: set[tuple[str, int]] | None = None):
        self.allow_private = allow_private
        self.always_allowed = {(host.lower(), port) for host, port in (always_allowed or set())}

    def connect_addresses(self, host: str, port: int) -> list[str]:
        """Where to connect for host:port: the host itself when no check applies, else every
        address it resolves to, all of which must be public (else ForbiddenImage)."""
        if self.allow_private or (host.lower(), port) in self.always_allowed:
            return [host]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise ImageFetchError(
                f"cannot resolve the image host {host!r}", "Check the image URL and this backend's DNS", retryable=True
            ) from None
        ips = list(dict.fromkeys(info[4][0] for info in infos))
        private = [ip for ip in ips if not is_public(ip)]
        if private:
            raise ForbiddenImage(
                f"image host {host!r} resolves to a private/internal address ({private[0]}); refused",
                "Serve images from a public address or from Label Studio; to allow internal image "
                "hosts set ALLOW_PRIVATE_IMAGE_URLS=true (only where task data is trusted)",
            )
        return ips


def _guarded(base: type, policy: AddressPolicy) -> type:
    class Guarded(base):  # type: ignore[misc, valid-type]
        def _new_conn(self):  # urllib3's signature
            # Connect to a checked address, in resolver order like urllib3 does; TLS still
            # verifies the certificate against the name, which is restored before the handshake.
            name = self._dns_host
            failure: ConnectTimeoutError | None = None
            try:
                for address in policy.connect_addresses(name, self.port):
                    self._dns_host = address
                    try:
                        return super()._new_conn()
                    except ConnectTimeoutError as exc:  # NewConnectionError included: try the next one
                        failure = exc
                raise failure  # type: ignore[misc]
            finally:
                self._dns_host = name

    return Guarded


class _GuardedAdapter(DeadlineAdapter):
    def __init__(self, policy: AddressPolicy):
        self.connection_classes = {
            "http": _guarded(DeadlineHTTPConnection, policy),
            "https": _guarded(DeadlineHTTPSConnection, policy),
        }
        super().__init__(pool_connections=8, pool_maxsize=16, max_retries=0)


def guarded_session(policy: AddressPolicy) -> requests.Session:
    """A session with no ambient credentials (.netrc) or proxies, whose connections obey `policy`
    and the current download deadline (backend.net.transport)."""
    return bare_session(_GuardedAdapter(policy))
