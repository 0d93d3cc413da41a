"""Where a webhook may go: the operator's allow-list (TAILOR_WEBHOOK_ALLOW) and the addresses
no webhook reaches unless the operator names them.

A webhook is a request Tailor makes on a user's behalf, so without these checks a job spec
could make Tailor POST to its database, its cloud's metadata service (169.254.169.254) or
anything else on the private network (server-side request forgery). Checked twice: the URL's
text at submission (and the addresses its name resolves to then), and every resolved address
again right before each attempt, whose connection then goes to the checked address itself, so
a name that re-resolves elsewhere after the check (DNS rebinding) never reaches it.

Plain Python: no settings, no database (app.core.config parses the allow-list with it).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")


class TargetRefused(Exception):
    """A webhook URL or address that must not be called; `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def is_public(address: IPAddress) -> bool:
    """True for globally routable unicast addresses: not private, loopback, link-local
    (cloud metadata lives there), shared (100.64/10), reserved, multicast or unspecified,
    nor an IPv6 address that carries one of those IPv4 addresses inside it."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        elif address.sixtofour is not None and not is_public(address.sixtofour):
            return False  # 2002:7f00:1:: reaches 127.0.0.1 through a 6to4 relay
    # is_global alone lets through ::/8 (IPv4-compatible ::127.0.0.1) and the NAT64 prefix
    # 64:ff9b::/96 (64:ff9b::a9fe:a9fe is 169.254.169.254 behind a NAT64 gateway): both
    # are reserved, and `reserved` is what README promises to refuse.
    return address.is_global and not address.is_multicast and not address.is_reserved


@dataclass(frozen=True)
class WebhookPolicy:
    """A parsed allow-list.

    Args:
        any_public: `*`: any host name, as long as every address it has is public.
        hosts: exact host names allowed (their addresses must still be public).
        suffixes: `.example.com` from `*.example.com`: any subdomain (public addresses).
        networks: addresses allowed whatever their kind (loopback, private...).
    """

    any_public: bool = False
    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> WebhookPolicy:
        """Parse TAILOR_WEBHOOK_ALLOW. Raises ValueError naming an entry that is none of a
        host name, `*.domain`, `*`, an IP address or a CIDR network."""
        any_public, hosts, suffixes, networks = False, set(), [], []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                any_public = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry[2:] if entry.startswith("*.") else entry
            if not name or not all(part and part.replace("-", "").isalnum()
                                   for part in name.split(".")):
                raise ValueError(f"TAILOR_WEBHOOK_ALLOW: {raw.strip()!r} is not a host name, "
                                 "*.domain, *, an IP address or a CIDR network")
            if entry.startswith("*."):
                suffixes.append("." + name)
            else:
                hosts.add(name)
        return cls(any_public, frozenset(hosts), tuple(suffixes), tuple(networks))

    @property
    def enabled(self) -> bool:
        return bool(self.any_public or self.hosts or self.suffixes or self.networks)

    def check_url(self, url: str) -> SplitResult:
        """The URL's parts if its text may be called; resolving comes after.

        Raises:
            TargetRefused: `invalid_webhook_url` (not http(s), no host, a bad port),
                `credentials_in_spec` (user or password in the URL: the signature
                authenticates Tailor, secrets do not belong in a job spec), or
                `webhook_target_not_allowed` (a host the allow-list does not name).
        """
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError when out of range or not a number
        except ValueError as exc:
            raise TargetRefused("invalid_webhook_url", f"not a valid URL ({exc})") from exc
        if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            # urlsplit silently drops tabs and newlines and a space in a host name never
            # resolves: such a URL would be stored as sent and retried for an hour.
            raise TargetRefused("invalid_webhook_url", "must not contain spaces or control "
                                "characters")
        if parts.port == 0:
            raise TargetRefused("invalid_webhook_url", "port 0 is not a port a receiver "
                                "listens on")
        if parts.scheme.lower() not in SCHEMES or not parts.hostname:
            raise TargetRefused("invalid_webhook_url",
                                "must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("credentials_in_spec", "must not carry a user name or "
                                "password; receivers check the X-Tailor-Signature instead")
        host = parts.hostname
        literal = _literal(host)
        if literal is not None:
            self.check_address(literal, host_allowed=self.any_public)
        elif not (self.any_public or host in self.hosts
                  or any(host.endswith(s) for s in self.suffixes)):
            raise TargetRefused("webhook_target_not_allowed", f"host {host} is not in the "
                                "operator's webhook allow-list (TAILOR_WEBHOOK_ALLOW)")
        return parts

    def check_address(self, address: IPAddress, *, host_allowed: bool) -> None:
        """Raise TargetRefused unless `address` lies in a network the allow-list names, or
        is public and its host is allowed (`host_allowed`: a name the list allows, or `*`
        for an address written in the URL)."""
        if any(address in net for net in self.networks):
            return
        if not is_public(address):
            raise TargetRefused("webhook_target_not_allowed", "the target is a private, "
                                "loopback, link-local or otherwise internal address, which "
                                "webhooks may not reach unless the operator allows it")
        if not host_allowed:
            raise TargetRefused("webhook_target_not_allowed", f"address {address} is not in "
                                "the operator's webhook allow-list (TAILOR_WEBHOOK_ALLOW)")

    def resolve(self, parts: SplitResult) -> list[IPAddress]:
        """Every address the URL's host resolves to, each checked (call check_url first:
        it decides whether the name is allowed at all); raises TargetRefused if
        any is refused (a name with one internal address is refused as a whole), OSError
        when the name does not resolve."""
        host = parts.hostname or ""
        literal = _literal(host)
        if literal is not None:
            return [literal]
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                       for info in infos))
        for address in addresses:
            self.check_address(address, host_allowed=True)  # check_url allowed the name
        return addresses


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
