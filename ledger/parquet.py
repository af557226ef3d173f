"""`quantarb ledger export --format parquet`: one Parquet file per table, for DuckDB, Polars
or pandas (docs/research.md).

Columns keep the ledger's types: INTEGER -> int64, REAL -> float64, TEXT -> string. Money
(quantities, prices, fees, PnL) stays decimal TEXT, exact as the ledger keeps it; a reader
casts it (`CAST(realized_pnl AS DECIMAL(38, 12))` in DuckDB, `pl.col(...).cast(pl.Decimal)`),
never a float chosen here. JSON columns (`events.payload`, ...) stay JSON text. Each file's
metadata names its table and the ledger's schema version.

Runs on the read-only connection (safe while the engine writes: one read transaction, so
the tables agree with each other), streams rows in batches (a big ledger is not loaded
whole), and writes each file under a temporary name renamed into place, so a reader never
sees half a file. Existing files are replaced only when asked.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiosqlite

from ledger.errors import LedgerError
from ledger.queries import EXPORTABLE, schema_version, table_names

BATCH_ROWS = 65_536
_TYPES = {"INTEGER": "int64", "REAL": "float64", "TEXT": "string", "BLOB": "binary"}


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise LedgerError("Parquet export needs pyarrow: pip install 'quantarb[research]'") from None
    return pyarrow


async def export_parquet(db: aiosqlite.Connection, out_dir: str | os.PathLike[str], *, table: str | None = None,
                         force: bool = False) -> dict[str, int]:
    """Write `<out_dir>/<table>.parquet` for every exportable table the ledger has (or only
    `table`); returns rows written per table. Refuses, before writing anything, to replace a
    file without `force`."""
    pa = _pyarrow()
    if table is not None and table not in EXPORTABLE:
        raise LedgerError(f"cannot export {table!r}: choose one of {', '.join(EXPORTABLE)}")
    present = await table_names(db)
    if table is not None and table not in present:
        raise LedgerError(f"cannot export {table!r}: this ledger has no such table")
    names = [table] if table is not None else [t for t in EXPORTABLE if t in present]
    targets = await asyncio.to_thread(_targets, Path(out_dir), names, force)
    version = await schema_version(db)
    counts: dict[str, int] = {}
    await db.execute("BEGIN")  # one snapshot for every table
    try:
        for name in names:
            counts[name] = await _write_table(db, pa, name, targets[name], version)
    finally:
        await db.execute("COMMIT")
    return counts


def _targets(out: Path, names: list[str], force: bool) -> dict[str, Path]:
    if out.exists() and not out.is_dir():
        raise LedgerError(f"{out}: not a directory")
    targets = {name: out / f"{name}.parquet" for name in names}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash and not force:
        raise LedgerError(f"{clash[0]} exists: use --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return targets


async def _write_table(db: aiosqlite.Connection, pa: Any, name: str, path: Path, version: int) -> int:
    columns = [(str(r[1]), str(r[2]).upper()) for r in await db.execute_fetchall(f"PRAGMA table_info({name})")]
    schema = pa.schema([(col, getattr(pa, _TYPES.get(kind, "string"))()) for col, kind in columns],
                       metadata={"quantarb.table": name, "quantarb.schema_version": str(version)})
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    writer = pa.parquet.ParquetWriter(tmp, schema, compression="zstd")
    try:
        async with db.execute(f"SELECT {', '.join(c for c, _ in columns)} FROM {name} ORDER BY rowid") as cur:
            while rows := list(await cur.fetchmany(BATCH_ROWS)):
                arrays = []
                for i, field in enumerate(schema):
                    try:
                        arrays.append(pa.array([row[i] for row in rows], type=field.type))
                    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                        raise LedgerError(f"{name}.{field.name}: a value does not fit its column type "
                                          f"({field.type}): {exc}") from None
                writer.write_batch(pa.record_batch(arrays, schema=schema))
                count += len(rows)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)
    return count
