"""The kernel's rate estimator (ip_vs_est.c), the numbers ``ipvsadm -L --rate`` shows.

Every 2 seconds ``estimation_timer`` takes the difference of each counter since the
last tick and moves a scaled average a quarter of the way toward it (W = 2^-2):
connections and packets scaled by 2^10, bytes by 2^5, both already divided by the
2-second tick (the shifts 9 and 4). ``ip_vs_read_estimator`` rounds them back to units.
The kernel's timer is one per network namespace, started with the module; here the
ticks run every 2 s of packet time from the first packet.
"""

from __future__ import annotations

from collections.abc import Mapping

TICK_NS = 2 * 1_000_000_000  # estimation_timer: mod_timer(jiffies + 2*HZ)
COUNT_KEYS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_KEYS = ("cps", "inpps", "outpps", "inbps", "outbps")
# per counter: the shift that scales a 2-second difference (x 2^10 / 2 or x 2^5 / 2),
# and the rounding ip_vs_read_estimator adds before shifting back
_SCALE = ((9, 0x1FF, 10), (9, 0x1FF, 10), (9, 0x1FF, 10), (4, 0xF, 5), (4, 0xF, 5))


class RateEstimator:
    """One ``struct ip_vs_estimator``: the last counters seen and five scaled averages."""

    __slots__ = ("avg", "last")

    def __init__(self) -> None:
        self.last = [0, 0, 0, 0, 0]  # e->last_conns ... (zero: a new service's stats are)
        self.avg = [0, 0, 0, 0, 0]   # e->cps, inpps, outpps, inbps, outbps (scaled)

    def tick(self, counters: Mapping[str, int]) -> None:
        """One ``estimation_timer`` pass over this estimator (ip_vs_est.c:96)."""
        for i, key in enumerate(COUNT_KEYS):
            now = int(counters[key])
            rate = (now - self.last[i]) << _SCALE[i][0]
            self.last[i] = now
            # (s64)rate - (s64)avg, shifted arithmetically: Python's >> floors as the
            # kernel's signed shift does, so a decaying average reaches 0
            self.avg[i] += (rate - self.avg[i]) >> 2

    def read(self) -> dict[str, int]:
        """``ip_vs_read_estimator`` (ip_vs_est.c:181): the rates in units per second."""
        return {key: (self.avg[i] + _SCALE[i][1]) >> _SCALE[i][2]
                for i, key in enumerate(RATE_KEYS)}
