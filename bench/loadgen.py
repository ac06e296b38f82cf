"""Closed-loop HTTP load generator, run as its own process: ``python -m bench.loadgen --url ... --out ...``.

``--concurrency`` requests are in flight at any time (closed loop), ``POST /recommend {"user_id", "k"}`` back to
back, cycling over the user ids, over a pool of ``--connections`` keep-alive connections taken in turn; requests started during ``--warmup`` are discarded. Each recorded request
keeps its client latency, status and the response's ``timings_ms``. The default client is a minimal HTTP/1.1 client
on asyncio streams (≈ 50 µs of client CPU per request, so the generator takes little of a 2-core machine from the
server); ``--client httpx`` uses httpx.AsyncClient instead. The client's own CPU time is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class RawConnection:
    """One keep-alive HTTP/1.1 connection: JSON POST, Content-Length or chunked responses."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("latin-1") + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            payload = b"".join(parts)
        else:
            payload = await self.reader.read()
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    users = json.loads(Path(args.users).read_text())
    random.Random(args.seed).shuffle(users)
    path = url.path.rstrip("/") + "/recommend"
    started = time.perf_counter()
    warm_until = started + args.warmup
    stop_at = warm_until + args.duration
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    next_user = 0
    sent = 0

    # keep-alive connections shared by the in-flight requests, taken in turn: like a fleet of callers, requests
    # reach every server worker process (a connection stays with the worker that accepted it)
    pool: asyncio.Queue[RawConnection] = asyncio.Queue()
    connections = [
        RawConnection(url.hostname or "127.0.0.1", url.port or 80)
        for _ in range(max(args.connections, args.concurrency))
    ]
    for connection in connections:
        pool.put_nowait(connection)

    async def pooled_post(path: str, body: bytes) -> tuple[int, bytes]:
        connection = await pool.get()
        try:
            return await connection.post(path, body)
        except Exception:
            await connection.close()  # reconnects on its next use
            raise
        finally:
            pool.put_nowait(connection)

    async def worker(slot: int) -> None:
        nonlocal next_user, sent
        if args.client == "httpx":
            import httpx

            client: Any = httpx.AsyncClient(base_url=f"{url.scheme}://{url.netloc}", timeout=30.0)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    break
                user = users[next_user % len(users)]
                next_user += 1
                body = json.dumps({"user_id": user, "k": args.k}).encode()
                try:
                    if args.client == "httpx":
                        response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
                        status, payload = response.status_code, response.content
                    else:
                        status, payload = await pooled_post(path, body)
                except Exception as error:  # noqa: BLE001 - every failure is counted, the run goes on
                    status, payload = -1, repr(error).encode()
                t1 = time.perf_counter()
                sent += 1
                if t0 < warm_until:
                    continue
                record: dict[str, Any] = {"t": round(t0 - warm_until, 4), "ms": round((t1 - t0) * 1000, 4),
                                          "status": status}  # fmt: skip
                if status == 200:
                    try:
                        data = json.loads(payload)
                        record["timings"] = data.get("timings_ms", {})
                        record["items"] = len(data.get("items", []))
                        record["fallback"] = bool(data.get("fallback"))
                        record["degraded"] = bool(data.get("degraded"))
                    except ValueError:
                        record["status"] = -2
                if record["status"] != 200 and len(errors) < 20:
                    errors.append(f"{status}: {payload[:300]!r}")
                records.append(record)
        finally:
            if args.client == "httpx":
                await client.aclose()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for connection in connections:
        await connection.close()
    measured = time.perf_counter() - warm_until
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "concurrency": args.concurrency,
        "connections": len(connections) if args.client == "raw" else None,
        "k": args.k,
        "client": args.client,
        "warmup_s": args.warmup,
        "duration_s": round(measured, 3),
        "client_cpu_s": round(client_cpu, 3),
        "sent_including_warmup": sent,
        "records": records,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="service root, e.g. http://127.0.0.1:3000")
    parser.add_argument("--users", required=True, help="JSON file: a list of user ids")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (closed loop)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections they share (raw client)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result))
    ok = sum(1 for r in result["records"] if r["status"] == 200)
    print(f"loadgen: {len(result['records'])} requests ({ok} ok) in {result['duration_s']:.1f} s at concurrency "
          f"{args.concurrency}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
