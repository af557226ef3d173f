"""DurationHistogram: how long things take, in fixed buckets (pure, bounded memory).

The live engine keeps two of these for as long as it runs (weeks): how long an edge stays
above the threshold (the pipeline) and how long we take from the quote to both entry orders
sent (the orchestrator). A list of samples would grow for ever; fixed buckets do not, and a
trader reads these as "mostly under 50 ms", not to the microsecond. The bounds are roughly
1-2-5 per decade from 1 ms to a minute; the last bucket is open ("60 s and longer").
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

# Upper bounds (exclusive) of the buckets, in ms; a last bucket takes everything above.
BOUNDS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 60_000)


def bucket_label(i: int, bounds: Sequence[float] = BOUNDS_MS) -> str:
    """`<1ms`, `1-2ms`, ..., `>=60s` for bucket `i`."""
    def fmt(ms: float) -> str:
        return f"{ms / 1000:g}s" if ms >= 1000 else f"{ms:g}ms"

    if i == 0:
        return f"<{fmt(bounds[0])}"
    if i >= len(bounds):
        return f">={fmt(bounds[-1])}"
    lo, hi = bounds[i - 1], bounds[i]
    if hi >= 1000 and lo >= 1000:
        return f"{lo / 1000:g}-{fmt(hi)}"
    return f"{lo:g}-{fmt(hi)}" if hi < 1000 else f"{fmt(lo)}-{fmt(hi)}"


class DurationHistogram:
    """Counts of durations per fixed bucket, with their count, sum and maximum."""

    __slots__ = ("_bounds_ns", "_counts", "count", "max_ns", "sum_ns")

    def __init__(self, bounds_ms: Sequence[float] = BOUNDS_MS) -> None:
        if not bounds_ms or list(bounds_ms) != sorted(set(bounds_ms)) or bounds_ms[0] <= 0:
            raise ValueError("bounds must be positive and strictly increasing")
        self._bounds_ns = tuple(round(b * 1_000_000) for b in bounds_ms)
        self._counts = [0] * (len(bounds_ms) + 1)
        self.count = 0
        self.sum_ns = 0
        self.max_ns = 0

    @property
    def bounds_ms(self) -> tuple[float, ...]:
        return tuple(b / 1_000_000 for b in self._bounds_ns)

    def record(self, duration_ns: int) -> None:
        """One duration (a negative one, which a clock never gives, counts as 0)."""
        duration_ns = max(duration_ns, 0)
        self._counts[bisect_right(self._bounds_ns, duration_ns)] += 1
        self.count += 1
        self.sum_ns += duration_ns
        self.max_ns = max(self.max_ns, duration_ns)

    def counts(self) -> tuple[int, ...]:
        return tuple(self._counts)

    def mean_ms(self) -> float | None:
        return self.sum_ns / self.count / 1_000_000 if self.count else None

    def quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (0 < q <= 1), in ms: an upper
        estimate, exact to the bucket. The open last bucket answers the maximum seen."""
        if not 0.0 < q <= 1.0:
            raise ValueError("q must be in (0, 1]")
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if i < len(self._bounds_ns):
                    return min(self._bounds_ns[i], self.max_ns) / 1_000_000
                return self.max_ns / 1_000_000
        return self.max_ns / 1_000_000  # pragma: no cover - seen reaches count

    def merge(self, others: Iterable[DurationHistogram]) -> DurationHistogram:
        """A new histogram holding this one and `others` (same bounds)."""
        out = DurationHistogram(self.bounds_ms)
        for h in (self, *others):
            if h._bounds_ns != out._bounds_ns:
                raise ValueError("cannot merge histograms with other bounds")
            for i, n in enumerate(h._counts):
                out._counts[i] += n
            out.count += h.count
            out.sum_ns += h.sum_ns
            out.max_ns = max(out.max_ns, h.max_ns)
        return out

    def as_dict(self) -> dict[str, object]:
        """JSON-able: bounds, counts per bucket, count, mean, p50/p90/p99 (bucket bounds), max."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {
            "bounds_ms": list(self.bounds_ms), "counts": list(self._counts), "count": self.count,
            "mean_ms": r(self.mean_ms()), "p50_ms": r(self.quantile_ms(0.5)), "p90_ms": r(self.quantile_ms(0.9)),
            "p99_ms": r(self.quantile_ms(0.99)), "max_ms": round(self.max_ns / 1_000_000, 3),
        }
