"""Storage providers: in-memory by default; PostgreSQL under the ``postgres`` extra."""
