"""Run the ``obsjobs`` command as ``python -m obsjobs``."""

from __future__ import annotations

from obsjobs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
