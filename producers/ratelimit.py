"""Per-client token buckets for the collector: how many requests one client may make.

Pure: the clock is an argument, nothing here touches a socket. The buckets live in this process's
memory, so the limit is per collector process (N processes behind a balancer allow N times the
rate); a front proxy is the place for a global limit.
"""

from __future__ import annotations

import ipaddress
from typing import Final

#: IPv6 clients are counted by their /64: one host usually holds a whole /64, and would otherwise
#: get a fresh bucket per address it picks.
IPV6_PREFIX: Final = 64


def client_key(address: str | None) -> str:
    """The rate-limit key of a peer address: IPv4 as is, IPv6 by its /64, anything else as given."""
    if not address or ":" not in address:
        return address or "-"
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))


class RateLimiter:
    """Token buckets: each key may take ``burst`` at once and ``rate_per_s`` a second on average.

    At most ``max_keys`` buckets are kept; beyond, the least recently used is forgotten (it comes
    back full: a client that cycles through more keys than that gets more than its rate).
    """

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> (tokens left, time they were counted); insertion order is recency of use.
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> float:
        """Take one token for ``key`` at time ``now`` (seconds, monotonic): 0.0 when granted, else
        the seconds until one will be there (nothing is taken then)."""
        buckets = self._buckets
        entry = buckets.pop(key, None)
        if entry is None:
            tokens = self.burst
            if len(buckets) >= self.max_keys:
                del buckets[next(iter(buckets))]
        else:
            left, then = entry
            tokens = min(self.burst, left + (now - then) * self.rate_per_s) if now > then else left
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)


__all__ = ["IPV6_PREFIX", "RateLimiter", "client_key"]
