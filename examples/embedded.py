"""Embed obsjobs in an existing asyncio service: a tiny sign-up server over TCP.

    python examples/embedded.py --duration 2

Each request is one line with a user name. The server enqueues a welcome job for it and
replies with the job's id. With ``--duration`` the script also plays the clients and
stops by itself. Without it, the script serves until Ctrl-C, and
``printf 'ada\\n' | nc 127.0.0.1 8023`` sends a request.

The engine shares the service's event loop and process, starts and stops with it
(``async with engine``), and uses the in-memory queue, so a job not yet run when the
process exits is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from obsjobs import Engine, MemoryQueue, Metrics, compose, configure_logging

log = structlog.get_logger("embedded")


@dataclass
class AppState:
    """The state the jobs share with the service: the users welcomed so far."""

    welcomed: list[str] = field(default_factory=list)


engine = Engine(AppState(), compose(MemoryQueue(), Metrics()), shutdown_grace_s=5.0)


@engine.job(name="embedded.send_welcome")
async def send_welcome(state: AppState, user: str) -> None:
    """Welcome a new user. The sleep takes the place of a call to a mail service."""
    await asyncio.sleep(0.05)
    state.welcomed.append(user)
    log.info("welcome.sent", user=user)


async def handle_sign_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read one user name, enqueue its welcome job, and reply with the job id."""
    user = (await reader.readline()).decode(errors="replace").strip()
    if user:
        job_id = await send_welcome.enqueue(user)
        writer.write(f"queued {job_id}\n".encode())
    else:
        writer.write(b"error: send a user name on one line\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def sign_up(host: str, port: int, user: str) -> str:
    """Send one sign-up request as a client would, and return the server's reply."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"{user}\n".encode())
    await writer.drain()
    reply = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return reply.decode().strip()


async def run(
    *, host: str = "127.0.0.1", port: int = 8023, duration_s: float | None = None
) -> list[str]:
    """Serve sign-ups with the engine running beside the server; return the replies sent.

    With ``duration_s``, send a request every 0.2 seconds and stop after that time;
    without it, serve until cancelled (Ctrl-C).
    """
    server = await asyncio.start_server(handle_sign_up, host, port)
    bound_port = server.sockets[0].getsockname()[1]
    replies: list[str] = []
    # Leaving the block closes the server first, then stops the engine, which lets
    # welcome jobs already running finish.
    async with engine, server:
        log.info("service.started", host=host, port=bound_port)
        if duration_s is None:
            await server.serve_forever()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (duration_s or 0.0)
        while loop.time() < deadline:
            replies.append(await sign_up(host, bound_port, f"user-{len(replies) + 1}"))
            await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0.0)))
    log.info("service.stopped", requests=len(replies), welcomed=len(engine.state.welcomed))
    return replies


def main() -> None:
    """Parse the command line and run the service."""
    parser = argparse.ArgumentParser(description="A sign-up service that embeds obsjobs.")
    parser.add_argument("--duration", type=float, help="play clients, stop after SECONDS")
    parser.add_argument("--port", type=int, default=8023, help="TCP port on 127.0.0.1")
    args = parser.parse_args()

    configure_logging("console")
    # Ctrl-C cancels run(), whose async with blocks close the server and stop the
    # engine; the KeyboardInterrupt that follows needs no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(port=args.port, duration_s=args.duration))


if __name__ == "__main__":
    main()
