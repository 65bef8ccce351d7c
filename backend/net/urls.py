"""One strict parser for every http(s) URL this backend connects to.

Why: the code that decides "this URL is on the Label Studio host, send the token" and the HTTP
client that connects must see the same host. Parsers disagree on odd input: for
`http://a:1\\@b:2/x`, urllib.parse.urlsplit reads host b port 2 while urllib3 (and so requests)
connects to a:1; WHATWG parsers drop tabs and newlines anywhere; userinfo hides a host behind
another. So a URL is parsed once, here, into an HttpUrl. What cannot be read one way only is
refused (backslashes, userinfo, control characters, whitespace other than a space in the path,
lone surrogates, bad ports, unbalanced brackets, non-ASCII or empty hosts). The string handed to
requests (`HttpUrl.url`) is rebuilt from the parsed parts and checked to be read back as the same
scheme, host and port by urllib3 and by requests; and `HttpUrl.origin` is what "same host" means.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests
import urllib3.util
from urllib3.exceptions import LocationParseError

from backend.errors import BadRequest

DEFAULT_PORTS = {"http": 80, "https": 443}
URL_FIX = (
    "Use a plain absolute http(s) URL: no backslashes, user:password@, tabs, newlines or other control "
    "characters; percent-encode special characters in the path (%20 for a space)"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")  # an ASCII host name or IPv4 literal, lower case
_PORT = re.compile(r"[0-9]{1,5}")
_HEX = "0123456789abcdefABCDEF"
# What stays as it is in a path or query: RFC 3986 unreserved, sub-delims, ":@/?[]" and escapes;
# the same set requests' requote_uri leaves alone, so what we build is what it sends.
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?[]")
_SECRET_PARAM_PARTS = ("sig", "token", "key", "cred", "auth", "secret", "pass", "security")


class UrlError(BadRequest):
    """A URL that cannot be read one way only; `reason` says why, the message shows it safely."""

    code = "bad_url"

    def __init__(self, reason: str, text: object, what: str = "URL"):
        super().__init__(f"{what} '{shown_raw(text)}' is refused: {reason}", URL_FIX)
        self.reason = reason


@dataclass(frozen=True)
class HttpUrl:
    """A normalised http(s) URL: lower-case scheme and host, explicit port, path+query, no fragment."""

    scheme: str  # "http" | "https"
    host: str  # lower case; an IPv6 literal without brackets, in its compressed form
    port: int  # always set: the scheme's default when the URL has none
    target: str  # path and query as sent on the request line, starting with "/"

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): two URLs are on the same host exactly when these are equal."""
        return self.scheme, self.host, self.port

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The string handed to requests: built from the parts, so it connects where `origin` says."""
        return f"{self.scheme}://{self.netloc}{self.target}"

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def shown(self) -> str:
        """Safe to log or put in an error: signature/token-like query values masked."""
        path, sep, query = self.target.partition("?")
        if not sep:
            return self.url
        masked = [
            (k, "***" if any(p in k.lower() for p in _SECRET_PARAM_PARTS) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        return f"{self.scheme}://{self.netloc}{path}?{urlencode(masked, safe='/*')}"

    def join(self, reference: str) -> HttpUrl:
        """Where a link or redirect `Location` relative to this URL points, parsed as strictly."""
        if not isinstance(reference, str):
            raise UrlError("it is not a string", reference, "location")
        _check_characters(reference, "location")
        if has_scheme(reference):  # absolute: parsed as it is ("http:x", "http:///x" are refused, not guessed)
            return parse_http_url(reference, "location")
        try:
            joined = urljoin(self.url, reference)
        except ValueError:  # e.g. "//[::1": urljoin's own checks
            raise UrlError("it cannot be resolved against the URL it came from", reference, "location") from None
        return parse_http_url(joined, "location")

    def __str__(self) -> str:
        """The shown form: a URL formatted into a message or log never carries its signature."""
        return self.shown


def parse_http_url(text: object, what: str = "URL") -> HttpUrl:
    """The HttpUrl of an absolute http(s) URL, or UrlError (a 400) naming what is wrong with it."""
    if not isinstance(text, str):
        raise UrlError("it is not a string", text, what)
    _check_characters(text, what)
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme not in DEFAULT_PORTS:
        raise UrlError(f"not http(s) (scheme {scheme!r})" if scheme else "not an absolute URL", text, what)
    rest = text[match.end() :]  # type: ignore[union-attr]
    if not rest.startswith("//"):
        raise UrlError("no '//' before the host", text, what)
    end = min((i for i in (rest.find(c, 2) for c in "/?#") if i != -1), default=len(rest))
    authority, tail = rest[2:end], rest[end:]
    host, port = _split_authority(authority, scheme, text, what)
    target = _encode_target(tail.partition("#")[0])
    url = HttpUrl(scheme, host, port, target)
    _check_clients_agree(url, text, what)
    return url


def has_scheme(text: str) -> bool:
    """True when `text` starts like an absolute URL ("x:"), i.e. it is not a path."""
    return bool(_SCHEME.match(text))


def shown_raw(text: object, limit: int = 120) -> str:
    """A URL that did not parse, as it can be shown: userinfo, query and fragment cut, everything
    non-printable or non-ASCII escaped (lone surrogates would break the JSON error body), shortened."""
    if not isinstance(text, str):
        return f"<{type(text).__name__}>"
    text = re.sub(r"^([^/?#]*//[^/?#:@]*:)[^/?#@]*@", r"\1***@", text)  # user:password@ -> user:***@
    cut = min((i for i in (text.find("?"), text.find("#")) if i != -1), default=-1)
    if cut != -1:
        text = text[:cut] + "?..."
    text = ascii(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def _check_characters(text: str, what: str) -> None:
    for char in text:
        code = ord(char)
        if char == "\\":
            raise UrlError("it contains a backslash", text, what)
        if 0xD800 <= code <= 0xDFFF:
            raise UrlError("it contains a lone surrogate (not valid Unicode)", text, what)
        if code < 0x20 or 0x7F <= code < 0xA0:
            raise UrlError(f"it contains the control character {char!r}", text, what)
        if char.isspace() and char != " ":
            raise UrlError(f"it contains the whitespace character {char!r}", text, what)


def _split_authority(authority: str, scheme: str, text: str, what: str) -> tuple[str, int]:
    if "@" in authority:
        raise UrlError("it holds user info (user:password@host)", text, what)
    if authority.startswith("["):
        literal, bracket, port_part = authority[1:].partition("]")
        if not bracket:
            raise UrlError("its IPv6 address has no closing ']'", text, what)
        if "%" in literal:
            raise UrlError("an IPv6 zone id (%...) is not supported", text, what)
        try:
            host = ipaddress.IPv6Address(literal).compressed
        except ValueError:
            raise UrlError(f"[{literal}] is not an IPv6 address", text, what) from None
        if port_part and not port_part.startswith(":"):
            raise UrlError("unexpected characters after the IPv6 address", text, what)
        port_text, has_port = port_part[1:], bool(port_part)
    else:
        if "[" in authority or "]" in authority:
            raise UrlError("a '[' or ']' outside an IPv6 address", text, what)
        host, colon, port_text = authority.partition(":")
        has_port = bool(colon)
        host = host.lower()
        if not host:
            raise UrlError("it has no host", text, what)
        if not host.isascii():
            raise UrlError("a non-ASCII host name (use its xn-- form)", text, what)
        if len(host) > 253 or not _HOST.fullmatch(host):
            raise UrlError(f"{host!r} is not a valid host name", text, what)
    if not has_port:
        return host, DEFAULT_PORTS[scheme]
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise UrlError(f"the port {port_text!r} is not a number in 1-65535", text, what)
    return host, int(port_text)


def _encode_target(tail: str) -> str:
    """Path and query with everything outside _KEEP percent-encoded (UTF-8), valid escapes kept."""
    if not tail.startswith("/"):
        tail = "/" + tail
    out = []
    for i, char in enumerate(tail):
        escape = char == "%" and len(tail) > i + 2 and tail[i + 1] in _HEX and tail[i + 2] in _HEX
        if char in _KEEP or escape:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _check_clients_agree(url: HttpUrl, text: str, what: str) -> None:
    """A tripwire: urllib3 and requests must read `url.url` as the very scheme, host and port we decided."""
    default = DEFAULT_PORTS[url.scheme]
    try:
        pool = urllib3.util.parse_url(url.url)  # how urllib3 picks a connection pool
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url.url, None)
        sent = urlsplit(prepared.url)  # how requests' adapter reads the URL it prepared
        views = {
            (pool.scheme or "", (pool.host or "").strip("[]").lower(), pool.port or default),
            (sent.scheme, sent.hostname or "", sent.port or default),
        }
    except (LocationParseError, requests.RequestException, ValueError):
        raise UrlError("the HTTP client cannot read it", text, what) from None
    if views != {url.origin}:
        raise UrlError("the HTTP client would read another host or port from it", text, what)
