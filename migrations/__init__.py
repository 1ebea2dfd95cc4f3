"""Alembic migrations for every table in `store.tables` (run by `autoslim migrate` / `autoslim up`)."""
