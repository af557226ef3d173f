"""`quantarb recording export`: recordings as Parquet files for DuckDB, Polars or pandas
(docs/research.md).

Three files in the output directory:
- `quotes.parquet`: the quotes the live normalizers make of the recorded frames (the same
  feeds and MT5 tick checks a replay uses, so the config's instruments decide the symbols):
  venue, symbol, bid, ask, sizes, the venue's timestamp, `recv_ns` and its wall time.
- `frames.parquet`: every frame as recorded (text in `frame`, binary in `frame_bytes`).
- `execution.parquet`: the execution records of a live recording (`kind` order, fill or
  event; `body` as JSON text; `client_order_id` pulled out for joins with the ledger).
Every row names its `recording` and `part`; `wall_ms` is the recorder's wall clock
(`header.wall_ms + (recv_ns - header.mono_ns) / 1e6`; null for a version 1 file).
Rows are written in batches under temporary names renamed into place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.clock import ReplayClock
from core.config import QuantarbConfig
from core.models import Quote
from engine.sources import build_feeds
from feeds.recording import (
    MT5_FEED_PREFIX,
    RecordedFrame,
    RecordingError,
    RecordingHeader,
    read_records,
    recording_files,
)
from mt5_bridge.bridge import Mt5TickReplay

BATCH_ROWS = 65_536
TABLES = ("quotes", "frames", "execution")


class ExportError(ValueError):
    """An export that cannot run (no pyarrow, a file in the way)."""


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExportError("Parquet export needs pyarrow: pip install 'quantarb[research]'") from None
    return pyarrow


class _Table:
    """Rows buffered by column, written to a Parquet file a batch at a time."""

    def __init__(self, pa: Any, path: Path, fields: list[tuple[str, Any]]) -> None:
        self._pa = pa
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.schema = pa.schema(fields, metadata={"quantarb.table": path.stem})
        self._columns: dict[str, list[Any]] = {name: [] for name, _ in fields}
        self._writer = pa.parquet.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.rows = 0

    def add(self, **row: Any) -> None:
        for name, column in self._columns.items():
            column.append(row.get(name))
        self.rows += 1
        if len(next(iter(self._columns.values()))) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        pa = self._pa
        arrays = [pa.array(self._columns[f.name], type=f.type) for f in self.schema]
        if arrays and len(arrays[0]):
            self._writer.write_batch(pa.record_batch(arrays, schema=self.schema))
        for column in self._columns.values():
            column.clear()

    def finish(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def export_recordings(config: QuantarbConfig, paths: Sequence[str | Path], out_dir: str | Path, *,
                      force: bool = False) -> dict[str, int]:
    """Write quotes, frames and execution records of `paths` (in replay order) to `out_dir`;
    returns rows per table. Refuses, before writing, to replace a file without `force`."""
    pa = _pyarrow()
    files = recording_files(paths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: not a directory")
    targets = {name: out / f"{name}.parquet" for name in TABLES}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash and not force:
        raise ExportError(f"{clash[0]} exists: use --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    where = [("recording", pa.string()), ("part", pa.int32()), ("recv_ns", pa.int64()), ("wall_ms", pa.int64())]
    tables = {
        "quotes": _Table(pa, targets["quotes"], [*where, ("feed", pa.string()), ("venue", pa.string()),
                                                  ("symbol", pa.string()), ("bid", pa.float64()),
                                                  ("ask", pa.float64()), ("bid_size", pa.float64()),
                                                  ("ask_size", pa.float64()), ("venue_ts_ms", pa.int64())]),
        "frames": _Table(pa, targets["frames"], [*where, ("venue", pa.string()), ("feed", pa.string()),
                                                  ("frame", pa.string()), ("frame_bytes", pa.binary())]),
        "execution": _Table(pa, targets["execution"], [*where, ("kind", pa.string()),
                                                        ("client_order_id", pa.string()), ("body", pa.string())]),
    }
    try:
        _export(config, files, tables)
    except BaseException:
        for table in tables.values():
            table.abandon()
        raise
    for table in tables.values():
        table.finish()
    return {name: table.rows for name, table in tables.items()}


def _export(config: QuantarbConfig, files: Sequence[Any], tables: dict[str, _Table]) -> None:
    clock = ReplayClock()
    quotes, frames, execution = tables["quotes"], tables["frames"], tables["execution"]
    here: dict[str, Any] = {}

    def sink(quote: Quote) -> None:
        quotes.add(**here, venue=quote.venue, symbol=quote.symbol, bid=quote.bid, ask=quote.ask,
                   bid_size=quote.bid_size, ask_size=quote.ask_size, venue_ts_ms=quote.venue_ts_ms)

    handlers: dict[str, Any] = {f.name: f.on_frame for f in build_feeds(config, sink, clock)}
    mt5 = config.venues.mt5
    symbols = [i.symbol for p in config.build_pairs() for i in p.instruments if i.venue == "mt5"]
    for terminal in mt5.terminals if mt5 else ():
        handlers[MT5_FEED_PREFIX + terminal] = Mt5TickReplay(terminal, symbols, sink).on_frame
    for item in files:
        header: RecordingHeader | None = item.header
        recording = header.recording if header is not None and header.recording else item.path.name
        part = header.part if header is not None else 0
        for rec in read_records(item.path):
            wall_ms = None if header is None else header.wall_ms + (rec.recv_ns - header.mono_ns) // 1_000_000
            where = {"recording": recording, "part": part, "recv_ns": rec.recv_ns, "wall_ms": wall_ms}
            if isinstance(rec, RecordedFrame):
                text = rec.frame if isinstance(rec.frame, str) else None
                frames.add(**where, venue=rec.venue, feed=rec.feed, frame=text,
                           frame_bytes=rec.frame if isinstance(rec.frame, bytes) else None)
                handler = handlers.get(rec.feed)
                if handler is not None:
                    here.clear()
                    here.update(where, feed=rec.feed)
                    clock.now_ns = rec.recv_ns
                    handler(rec.frame, rec.recv_ns)
            else:
                coid = rec.body.get("client_order_id")
                execution.add(**where, kind=rec.kind, client_order_id=coid if isinstance(coid, str) else None,
                              body=json.dumps(rec.body, sort_keys=True))


__all__ = ["TABLES", "ExportError", "RecordingError", "export_recordings"]
