"""Where the relay may POST events: the target URL policy of REST hooks (POST /v1/relay/hooks), and the one way a
delivery connects to a target.

Why the address is checked at delivery time and the connection made to that very address: a hook's URL is given by
whoever holds a token, and the relay sits inside someone's network. Checked only when subscribing, a hostname could
later resolve to 169.254.169.254 (a cloud's metadata service) or to a database on 10.0.0.0/8; checked at delivery
time but connected by name, the name could resolve to a public address for the check and to 127.0.0.1 a millisecond
later for the connection (DNS rebinding). So a delivery resolves the name once, checks every address, and opens
the TCP connection to the checked address itself; TLS still verifies the certificate against the hostname (SNI and
hostname check), so a certificate for the name is required as usual.

Under RELAY_ENV=production only https:// URLs to public addresses are accepted. In development (the default) http://
and loopback or private targets are allowed, so the whole flow can be tried against a receiver on the same machine.
"""

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests.certs
from urllib3 import Timeout

from .upstream import WATCHDOG, _WatchedHTTPPool, _WatchedHTTPSPool

MAX_URL_LENGTH = 2048
CONNECT_TIMEOUT = 3.05  # seconds; a receiver that takes longer to accept a connection is as good as down

# Networks that embed an IPv4 address: what they reach is decided by the embedded address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


class Refused(ValueError):
    """A target the policy refuses; the message says why and what to use instead (never the URL's query string)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # the hostname (or IP literal) as written, lower case, without brackets
    port: int
    path: str  # path and query string, as sent in the request line


def parse(url: str, production: bool) -> Target:
    """The URL's parts, or Refused: the checks that need no DNS."""
    if not isinstance(url, str) or not url:
        raise Refused("target_url is required: the https:// URL the relay POSTs each event to.")
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"target_url is longer than {MAX_URL_LENGTH} characters.")
    if any(ord(char) < 0x21 or ord(char) == 0x7f for char in url) or not url.isascii():
        raise Refused("target_url must be a URL without spaces, control characters or non-ASCII characters "
                      "(percent-encode them, and write an international domain name in its xn-- form).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise Refused(f"target_url is not a valid URL ({error}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused("target_url must start with https:// (or http:// on a development relay).")
    if production and scheme != "https":
        raise Refused("target_url must start with https:// on this relay (RELAY_ENV=production): events carry user "
                      "ids and amounts, and must not cross the internet in clear text.")
    if parts.username is not None or parts.password is not None:
        raise Refused("target_url must not carry a user name or password (user:password@host): the relay sends no "
                      "credentials; put a secret in the URL's path or query string if the receiver needs one.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Refused("target_url has no host name, e.g. https://hooks.zapier.com/hooks/standard/123/abc/.")
    if port == 0:
        raise Refused("target_url has port 0, which nothing listens on.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    target = Target(scheme, host, port or (443 if scheme == "https" else 80), path)
    if production:
        literal = _ip(host)
        if literal is not None and not public(literal):
            raise Refused(not_public(host, literal))
        if literal is None and (host == "localhost" or host.endswith(".localhost")):
            raise Refused(not_public(host, ipaddress.ip_address("127.0.0.1")))
    return target


def check(url: str, production: bool, resolver=None) -> Target:
    """parse(), and in production every address the host resolves to now must be public: a subscription is refused
    at once rather than failing at every delivery. Delivery checks again (connect())."""
    target = parse(url, production)
    if production:
        resolve_public(target, resolver or getaddrinfo)
    return target


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def public(address) -> bool:
    """An address on the public internet: not loopback, private, link-local (cloud metadata at 169.254.169.254),
    shared (100.64/10), reserved, multicast or unspecified, and not an IPv6 form of one of those."""
    if address.version == 6:
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address in _SIX_TO_FOUR:
            embedded = ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return public(embedded)
    return address.is_global and not address.is_multicast


def not_public(host: str, address) -> str:
    return (f"target_url's host {host} is (or resolves to) {address}, which is not a public internet address "
            "(loopback, private, link-local, metadata or reserved): a production relay posts events only to public "
            "https:// receivers.")


def getaddrinfo(host: str, port: int) -> list:
    """Every address of host, as ip_address objects, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen, addresses = set(), []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address not in seen:
            seen.add(address)
            addresses.append(address)
    return addresses


def resolve_public(target: Target, resolver) -> list:
    """The host's addresses, each checked; Refused when it resolves to none or to any non-public one. Any, not all:
    a name that also resolves to an internal address is someone's rebinding attempt or a mistake."""
    literal = _ip(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = resolver(target.host, target.port)
        except (OSError, UnicodeError) as error:
            raise Refused(f"target_url's host {target.host} could not be resolved ({_reason(error)}).") from None
    if not addresses:
        raise Refused(f"target_url's host {target.host} resolves to no address.")
    for address in addresses:
        if not public(address):
            raise Refused(not_public(target.host, address))
    return addresses


def _reason(error: Exception) -> str:
    return (getattr(error, "strerror", None) or str(error) or type(error).__name__)[:200]


# --- connecting: one POST to the address that was checked --------------------------------------------------------

@dataclass
class Answer:
    status: int | None  # None: no HTTP answer (refused by policy, could not connect, timed out)
    error: str | None


def post(target: Target, body: bytes, headers: dict, production: bool, budget: float, resolver=None,
         ca_certs: str | None = None) -> Answer:
    """POST body to the target, once: no retries (the delivery worker schedules those), no redirects (a 3xx is an
    answer like any other non-2xx: following it would let a receiver point the relay anywhere). `budget` bounds the
    whole exchange: the upstream watchdog cuts the socket of a receiver that trickles its answer."""
    resolver = resolver or getaddrinfo
    try:
        if production:
            addresses = resolve_public(target, resolver)
        else:
            literal = _ip(target.host)
            addresses = [literal] if literal is not None else resolver(target.host, target.port)
    except Refused as refusal:
        return Answer(None, str(refusal))
    except (OSError, UnicodeError) as error:
        return Answer(None, f"could not resolve {target.host} ({_reason(error)})")
    if not addresses:
        return Answer(None, f"{target.host} resolves to no address")
    timeout = Timeout(connect=min(CONNECT_TIMEOUT, budget), read=budget)
    watch = WATCHDOG.arm(time.monotonic() + budget)
    try:
        # Each checked address in the resolver's order, until one accepts the connection (a name with an IPv6 and
        # an IPv4 address, only one of which answers); never an address that was not checked.
        for index, address in enumerate(addresses):
            try:
                return _post_to(str(address), target, body, headers, timeout, ca_certs or requests.certs.where())
            except Exception as error:  # timeouts, refused connections, TLS failures: all "no answer"
                from urllib3.exceptions import ConnectTimeoutError
                if watch.fired:
                    return Answer(None, "timed out (the whole exchange took too long)")
                if isinstance(error, ConnectTimeoutError) and index + 1 < len(addresses):
                    continue  # could not connect (refused or timed out): the next address may answer
                return Answer(None, _describe(error))
        return Answer(None, f"{target.host} resolves to no address")
    finally:
        WATCHDOG.disarm(watch)


def host_header(target: Target) -> str:
    host = target.host if ":" not in target.host else f"[{target.host}]"
    return host if target.port == (443 if target.scheme == "https" else 80) else f"{host}:{target.port}"


def _post_to(address: str, target: Target, body: bytes, headers: dict, timeout: Timeout, ca_certs: str) -> Answer:
    if target.scheme == "https":
        pool = _WatchedHTTPSPool(address, target.port, timeout=timeout, retries=False, maxsize=1,
                                 server_hostname=target.host, assert_hostname=target.host,
                                 cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
    else:
        pool = _WatchedHTTPPool(address, target.port, timeout=timeout, retries=False, maxsize=1)
    try:
        response = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": host_header(target)},
                                redirect=False, retries=False, preload_content=False, assert_same_host=False)
        response.close()  # the answer's body is not used: the status says it all
        return Answer(response.status, None)
    finally:
        pool.close()


def _describe(error: Exception) -> str:
    """What went wrong, without the URL (urllib3's messages name the path, and a query string may hold a secret)."""
    from urllib3 import exceptions

    if isinstance(error, exceptions.NewConnectionError):  # a subclass of ConnectTimeoutError: first
        return "could not connect (connection refused or unreachable)"
    if isinstance(error, exceptions.ConnectTimeoutError):
        return "timed out connecting"
    if isinstance(error, exceptions.ReadTimeoutError):
        return "timed out waiting for the answer"
    if isinstance(error, exceptions.SSLError):
        return "TLS failed (certificate not valid for the host, or handshake refused)"
    if isinstance(error, exceptions.ProtocolError):
        return "the connection dropped before an answer"
    return f"no answer ({type(error).__name__})"
