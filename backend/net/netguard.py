"""An HTTP session whose connections obey an address policy, checked when the socket is opened.

The check runs inside urllib3's connection setup: the host name is resolved once, every address
it resolves to is checked, and the socket is opened to that checked address. So each redirect
hop is checked, and DNS rebinding (harmless at check time, internal at connect time) cannot slip
through. Three rules, by who named the host:
- image hosts (task data): public addresses only, unless ALLOW_PRIVATE_IMAGE_URLS;
- the LS host from LABEL_STUDIO_URL (an operator's setting): anything (LS often sits on a private
  network or loopback next to us);
- the LS host from a /setup body (any client that reaches the backend may send one): private and
  loopback addresses are fine (LS is usually on a docker network or localhost), but never a
  link-local, multicast, unspecified or reserved address, nor a known cloud metadata endpoint.
"""

from __future__ import annotations

import ipaddress
import socket

import requests
from urllib3.exceptions import ConnectTimeoutError

from backend.errors import BackendError, ImageFetchError
from backend.net.transport import (
    DeadlineAdapter,
    DeadlineHTTPConnection,
    DeadlineHTTPSConnection,
    bare_session,
)

# Metadata services that sit on ordinary unicast addresses (169.254.169.254 is link-local anyway):
# AWS's IPv6 endpoint, GCP's IPv6 endpoint, Alibaba Cloud's.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "fd20:ce::254", "100.100.100.200"))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class ForbiddenImage(BackendError):
    """The task points somewhere this backend must not read (outside the root, a private address)."""

    status, code = 403, "image_forbidden"


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`ip` without its zone id; an IPv4-mapped IPv6 address as the IPv4 address it reaches."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_public(ip: str) -> bool:
    """True for globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    addr = _address(ip)
    return addr.is_global and not addr.is_multicast


def is_unicast_host(ip: str) -> bool:
    """True for an address a host can be reached at: public, private or loopback unicast; False for
    link-local (where cloud metadata lives), multicast, unspecified (0.0.0.0 reaches this machine),
    reserved, IPv6 site-local, and the known metadata endpoints."""
    addr = _address(ip)
    if addr in METADATA_ADDRESSES or addr.is_link_local or addr.is_multicast or addr.is_unspecified:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return not addr.is_reserved and addr not in _THIS_NETWORK
    return not addr.is_site_local


class AddressPolicy:
    """Decides which (host, port) a connection may be opened to, and to which IP (see the module doc)."""

    def __init__(self, allow_private: bool, ls_host: tuple[str, int] | None = None, *, ls_from_setup: bool = False):
        self.allow_private = allow_private
        self.ls_host = (ls_host[0].lower(), ls_host[1]) if ls_host else None
        self.ls_from_setup = ls_from_setup

    def connect_addresses(self, host: str, port: int) -> list[str]:
        """Where to connect for host:port: the host itself when no check applies, else every
        address it resolves to, all of which must pass the host's rule (else ForbiddenImage)."""
        on_ls = (host.lower(), port) == self.ls_host
        if (on_ls and not self.ls_from_setup) or (not on_ls and self.allow_private):
            return [host]
        ips = _resolve(host, port)
        if on_ls:
            bad = [ip for ip in ips if not is_unicast_host(ip)]
            if bad:
                raise ForbiddenImage(
                    f"the Label Studio host {host!r} that /setup named resolves to {bad[0]}, a link-local, "
                    "multicast, unspecified or metadata address; refused",
                    "Set LABEL_STUDIO_URL to Label Studio's address (a /setup hostname may be a private or "
                    "loopback address, never one of those)",
                )
            return ips
        private = [ip for ip in ips if not is_public(ip)]
        if private:
            raise ForbiddenImage(
                f"image host {host!r} resolves to a private/internal address ({private[0]}); refused",
                "Serve images from a public address or from Label Studio; to allow internal image "
                "hosts set ALLOW_PRIVATE_IMAGE_URLS=true (only where task data is trusted)",
            )
        return ips


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ImageFetchError(
            f"cannot resolve the host {host!r}", "Check the URL and this backend's DNS", retryable=True
        ) from None
    return list(dict.fromkeys(info[4][0] for info in infos))


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
