"""A fault-injecting HTTP proxy for OpenAI-compatible endpoints (tests and benchmarks).

It sits in front of a real endpoint (`forge serve-teacher`) and answers a share of the chat
requests with a fault instead of, or made out of, the real answer:

    http_429   429 with `Retry-After: 1`
    http_500   500
    http_503   503
    stall      nothing at all until the client gives up (longer than its timeout)
    truncated  the real body cut in half, with a Content-Length that matches the cut body
               (the client reads a complete HTTP response that is not JSON)
    cut        the real body cut in half after announcing the full length (the connection
               drops mid-body)
    garbage    a well-formed completion whose content is garbage
    length     the real completion cut in half, finish_reason "length"

Faults are drawn from a seeded RNG per request and cycle through the kinds, so every kind
occurs once `rate * requests >= len(KINDS)`. Written with raw asyncio streams (not a web
framework) because a lying Content-Length or a half-sent body is exactly what it must produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections import Counter
from typing import Any

import httpx

KINDS = ("http_429", "http_500", "http_503", "stall", "truncated", "cut", "garbage", "length")
GARBAGE = "GARBAGE-BY-PROXY ]]}{ <acti0n> lorem \u2603 ipsum"
CUT_MARK = " CUT-BY-PROXY"


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.3, seed: int = 0,
                 kinds: tuple[str, ...] = KINDS) -> None:
        self.upstream = upstream.rstrip("/")          # .../v1
        self.rate = rate
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._n_faults = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(timeout=60)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    # -- HTTP ------------------------------------------------------------------------------
    def _draw(self) -> str | None:
        self.requests += 1
        if self.rng.random() >= self.rate:
            return None
        kind = self.kinds[self._n_faults % len(self.kinds)]
        self._n_faults += 1
        self.injected[kind] += 1
        return kind

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in
                       (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            fault = self._draw() if method == "POST" and path.endswith("/chat/completions") \
                else None
            await self._answer(fault, method, path, headers, body, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                       ) -> httpx.Response:
        keep = {k: v for k, v in headers.items() if k in ("content-type", "authorization")}
        return await self._client.request(method, self.upstream + path.removeprefix("/v1"),
                                          headers=keep, content=body)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, body: bytes, *,
              length: int | None = None, extra: dict[str, str] | None = None) -> None:
        hdr = {"content-type": "application/json", "content-length": str(
            len(body) if length is None else length), "connection": "close", **(extra or {})}
        writer.write(f"HTTP/1.1 {status} X\r\n".encode() + "".join(
            f"{k}: {v}\r\n" for k, v in hdr.items()).encode() + b"\r\n" + body)

    async def _answer(self, fault: str | None, method: str, path: str, headers: dict[str, str],
                      body: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if fault in ("http_429", "http_500", "http_503"):
            code = int(fault[5:])
            err = json.dumps({"error": {"message": f"injected {code}", "code": code}}).encode()
            self._send(writer, code, err, extra={"retry-after": "1"} if code == 429 else None)
        elif fault == "stall":
            # Say nothing until the client hangs up (its timeout), like a saturated server.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), timeout=120)
        elif fault == "garbage":
            self._send(writer, 200, json.dumps(_completion(GARBAGE, "stop")).encode())
        else:
            up = await self._forward(method, path, headers, body)
            content = up.content
            if fault == "truncated":
                self._send(writer, 200, content[:len(content) // 2])
            elif fault == "cut":
                self._send(writer, 200, content[:len(content) // 2], length=len(content))
            elif fault == "length" and up.status_code == 200:
                data = up.json()
                text = data["choices"][0]["message"]["content"] or ""
                data["choices"][0]["message"]["content"] = text[:len(text) // 2] + CUT_MARK
                data["choices"][0]["finish_reason"] = "length"
                self._send(writer, 200, json.dumps(data).encode())
            else:
                self._send(writer, up.status_code, content)
        await writer.drain()


def _completion(text: str, finish: str) -> dict[str, Any]:
    return {"id": "chatcmpl-proxy", "object": "chat.completion", "created": 0,
            "model": "proxy", "choices": [{"index": 0, "finish_reason": finish,
                                           "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
