"""Alembic migrations for every table in `app.tables` (run by `autoslim migrate` / `autoslim up`)."""
