"""The code, package versions, server and machine that the PostgreSQL benchmark ran on."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

import obsjobs

PACKAGES = (
    "obsjobs",
    "procrastinate",
    "saq",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "opentelemetry-sdk",
    "prometheus-client",
    "structlog",
)
SERVER_SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "jit")


def _git(*arguments: str) -> str:
    source = Path(obsjobs.__file__).resolve().parent.parent
    try:
        completed = subprocess.run(
            ["git", "-C", str(source), *arguments],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip()


def _sources_digest() -> str:
    # The commit does not show uncommitted edits, so a digest of the library's sources
    # identifies the code that was measured.
    digest = hashlib.sha256()
    for source in sorted(Path(obsjobs.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


async def describe_environment(conninfo: str) -> dict[str, Any]:
    """Return the obsjobs commit, package versions, server version and settings, machine."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute("SELECT version()")
        row = await cursor.fetchone()
        server = {"version": row[0] if row else "unknown"}
        for setting in SERVER_SETTINGS:
            cursor = await connection.execute(
                "SELECT setting, unit FROM pg_settings WHERE name = %s", [setting]
            )
            found = await cursor.fetchone()
            server[setting] = " ".join(part for part in found if part) if found else "unknown"
    dirty = _git("status", "--porcelain", "--", "obsjobs")
    return {
        "obsjobs_commit": _git("rev-parse", "--short", "HEAD"),
        "obsjobs_uncommitted_changes": bool(dirty) if dirty != "unknown" else "unknown",
        "obsjobs_sources_sha256": _sources_digest(),
        "packages": {package: _version(package) for package in PACKAGES},
        "postgresql": server,
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }
