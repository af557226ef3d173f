"""SQLite ledger: schema and migrations, the single writer, projections, recovery, queries."""
