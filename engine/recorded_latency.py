"""Real latencies from a live recording's execution records (`quantarb recording latency`).

Every record is stamped with the recorder's monotonic clock (the frames' `recv_ns`), so:
- reaction: a group's `intent` event (emitted while the quote that triggered it is being
  judged) to each entry order's `submitted` record (it leaves next), and to the later of the
  two entry legs (`both_sent`: what a replay's `--latency-ms` stands for, with the venue's
  answer time added);
- answer: an order's `submitted` to the first record with the venue's answer (acked, filled,
  partially filled, rejected, cancelled, expired);
- fill: `submitted` to the order's first `fill` record.
Per venue (both_sent per pair), in milliseconds: count, p50, p90, p99, max.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from core.pnl import percentile
from feeds.recording import RecordedExecution, read_records, recording_files

_ANSWERS = frozenset({"acked", "partially_filled", "filled", "rejected", "cancelled", "expired"})


def _summary(values_ns: Iterable[int]) -> dict[str, float | int]:
    ms = [v / 1e6 for v in values_ns]
    if not ms:
        return {"count": 0}
    return {"count": len(ms), "p50": round(percentile(ms, 50), 3), "p90": round(percentile(ms, 90), 3),
            "p99": round(percentile(ms, 99), 3), "max": round(max(ms), 3)}


def execution_latencies(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The latencies of the execution records in `paths` (replay order); JSON-able."""
    intent_ns: dict[str, int] = {}  # group id -> its intent event
    pair_of: dict[str, str] = {}
    sent: dict[str, tuple[int, str, str, str]] = {}  # coid -> (ns, venue, group, purpose)
    answered: dict[str, int] = {}
    filled: dict[str, int] = {}
    records = 0
    for item in recording_files(paths):
        for rec in read_records(item.path):
            if not isinstance(rec, RecordedExecution):
                continue
            records += 1
            body = rec.body
            if rec.kind == "event":
                data = body.get("data") or {}
                group = data.get("group_id") if isinstance(data, dict) else None
                if body.get("kind") == "intent" and isinstance(group, str):
                    intent_ns.setdefault(group, rec.recv_ns)
                    pair_of[group] = str(data.get("pair", ""))
                continue
            coid = body.get("client_order_id")
            if not isinstance(coid, str):
                continue
            if rec.kind == "order":
                state = body.get("state")
                if state == "submitted" and coid not in sent:
                    sent[coid] = (rec.recv_ns, str(body.get("venue", "")), str(body.get("group_id", "")),
                                  str(body.get("purpose", "")))
                elif state in _ANSWERS and coid in sent:
                    answered.setdefault(coid, rec.recv_ns)
            elif rec.kind == "fill" and coid in sent:
                filled.setdefault(coid, rec.recv_ns)
    by_venue: dict[str, dict[str, list[int]]] = {}
    both: dict[str, int] = {}  # group -> its last entry leg's send
    for coid, (ns, venue, group, purpose) in sent.items():
        row = by_venue.setdefault(venue, {"reaction": [], "answer": [], "fill": []})
        if purpose == "entry" and group in intent_ns:
            row["reaction"].append(ns - intent_ns[group])
            both[group] = max(both.get(group, ns), ns)
        if coid in answered:
            row["answer"].append(answered[coid] - ns)
        if coid in filled:
            row["fill"].append(filled[coid] - ns)
    by_pair: dict[str, list[int]] = {}
    for group, ns in both.items():
        by_pair.setdefault(pair_of.get(group, ""), []).append(ns - intent_ns[group])
    return {
        "records": records,
        "groups": len(intent_ns),
        "orders": len(sent),
        "venues": {venue: {kind: _summary(rows[kind]) for kind in ("reaction", "answer", "fill")}
                   for venue, rows in sorted(by_venue.items())},
        "both_sent": {pair: _summary(values) for pair, values in sorted(by_pair.items())},
    }
