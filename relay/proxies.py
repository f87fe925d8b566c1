"""Which peers may say who the client is (X-Forwarded-For, X-Forwarded-Proto).

One setting, FORWARDED_ALLOW_IPS, read by gunicorn (its own `forwarded_allow_ips`, see gunicorn.conf.py) and by the
app: the addresses or networks of the proxies in front, or `*` where the platform's router is the only way in
(Heroku, Render). The failed-login throttle counts per client address, so a client that could set its own address
could never be throttled: the headers of any other peer are ignored.
"""

import ipaddress

from werkzeug.middleware.proxy_fix import ProxyFix

DEFAULT = "127.0.0.1,::1"  # gunicorn's default too


def allow_list(text: str | None) -> list:
    """"*" or the listed networks; ValueError names an entry that is neither an address nor a network."""
    entries = [entry.strip() for entry in (text or DEFAULT).split(",") if entry.strip()]
    if "*" in entries:
        return ["*"]
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return networks


def trusted(peer: str | None, allowed: list) -> bool:
    if allowed == ["*"]:
        return True
    try:
        address = ipaddress.ip_address((peer or "").split("%")[0])
    except ValueError:
        return False
    return any(address in network for network in allowed)


class TrustedProxyFix:
    """ProxyFix, applied only to requests whose peer is a listed proxy: from anyone else X-Forwarded-* is ignored."""

    def __init__(self, app, hops: int, allowed: list):
        self.direct = app
        self.proxied = ProxyFix(app, x_for=hops, x_proto=hops)
        self.allowed = allowed

    def __call__(self, environ, start_response):
        app = self.proxied if trusted(environ.get("REMOTE_ADDR"), self.allowed) else self.direct
        return app(environ, start_response)
