"""An OpenAI-compatible teacher: async, bounded concurrency, retries, a DuckDB call cache and a
token budget.

- Endpoint: --base-url / $FORGE_OPENAI_BASE_URL / $OPENAI_BASE_URL; model: --llm-model /
  $FORGE_OPENAI_MODEL. The API key comes from $FORGE_OPENAI_API_KEY or $OPENAI_API_KEY, or from
  a Prefect Secret block named by $FORGE_OPENAI_SECRET_BLOCK - never from a flag or a flow
  parameter (Prefect stores parameters), and it is never written to DuckDB or logs: the cache
  key and the stored request contain the model, messages and generation parameters only.
- Cache: every call is keyed by sha256(model, messages, generation parameters, tools); a hit
  returns the stored response without a request, so a rerun or a resumed run never pays twice.
- Faults: 429 (after its Retry-After), 5xx, connection errors and bodies that are not a chat
  completion (cut off mid-JSON, garbage) are retried with exponential backoff and jitter (the
  SDK's own retries are off so that we count them); every failed exchange is a `llm_faults`
  row. A timed-out request is not retried blindly: the server may still be generating it (most
  do not cancel abandoned requests), so its slot stays taken for another `timeout_s`, the
  concurrency limit is halved (it grows back on successes) and a line says so. A call that still
  fails raises `EndpointFault`: the loop records the task or prompt and goes on. Ten calls given
  up in a row mean the endpoint is gone: `TeacherUnreachable` stops the run.
- Budget: once prompt + completion tokens reach `max_tokens_total`, the next uncached call
  raises BudgetExhausted and the loop stops cleanly.
- Transcripts use role `tool` for observations; on the wire (text protocol) they are sent as
  `user` messages holding `<ans>...</ans>`, which every chat endpoint accepts. With native tools
  the catalogue is also passed as `tools`, and a returned tool call becomes an `<action>` turn.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import duckdb
import httpx
import openai
from openai._models import construct_type  # the SDK's own lenient parser
from openai.types.chat import ChatCompletion

from forge.gym.catalogue import openai_tools
from forge.gym.tags import render_action
from forge.teacher.base import (
    BudgetExhausted,
    Completion,
    GenParams,
    TeacherError,
    TeacherUnreachable,
    estimate_tokens,
)
from forge.teacher.faults import CALL_CONTEXT, EndpointFault

__all__ = ["CALL_CONTEXT", "EndpointFault", "OpenAITeacher", "call_key", "resolve_api_key"]

KEY_ENVS = ("FORGE_OPENAI_API_KEY", "OPENAI_API_KEY")
SECRET_BLOCK_ENV = "FORGE_OPENAI_SECRET_BLOCK"
# Statuses worth another try: the server is overloaded or hiccuped. Other 4xx (a bad request,
# a context too long) would fail again the same way.
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class _Fault(Exception):
    """One failed exchange (internal): its kind, HTTP status and the wait the server asked."""

    def __init__(self, kind: str, message: str, status: int | None = None,
                 retry_after: float | None = None, retry: bool = True) -> None:
        super().__init__(message)
        self.kind, self.status, self.retry_after, self.retry = kind, status, retry_after, retry


def retry_after_s(headers: Any) -> float | None:
    """Seconds a 429/503 asks us to wait: `retry-after-ms`, `retry-after` as seconds or as an
    HTTP date (RFC 9110); None when absent or unreadable."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Limiter:
    """Concurrency limit that halves on a timeout (the server is saturated: piling more
    requests onto it only makes every one of them slower) and grows back by one after `limit`
    successes in a row, up to the configured concurrency."""

    def __init__(self, limit: int) -> None:
        self.max = self.limit = max(1, limit)
        self.in_flight = 0
        self._ok = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def lower(self) -> int:
        self.limit = max(1, self.limit // 2)
        self._ok = 0
        return self.limit

    def success(self) -> None:
        if self.limit < self.max:
            self._ok += 1
            if self._ok >= self.limit:
                self.limit += 1
                self._ok = 0


def resolve_api_key() -> str:
    for k in KEY_ENVS:
        v = os.environ.get(k)
        if v:
            return v
    block = os.environ.get(SECRET_BLOCK_ENV)
    if block:
        from prefect.blocks.system import Secret

        secret: Any = Secret.load(block)  # sync in a sync context (Prefect's dual API)
        return str(secret.get())
    # Local servers (serve-teacher, vLLM without --api-key) accept any key.
    return "none"


def call_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any],
             tools: list[dict[str, Any]] | None) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params, "tools": tools},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": "user" if m["role"] == "tool" else m["role"], "content": m["content"]}
            for m in messages]


class OpenAITeacher:
    def __init__(self, con: duckdb.DuckDBPyConnection | None, base_url: str, model: str,
                 api_key: str, *, concurrency: int = 8, max_tokens_total: int | None = None,
                 native_tools: bool = False, timeout_s: float = 120.0, max_retries: int = 6,
                 timeout_retries: int = 1, backoff_s: float = 0.5, max_wait_s: float = 300.0,
                 give_up_streak: int = 10, price_in_per_m: float = 0.0,
                 price_out_per_m: float = 0.0, log: Callable[[str], None] | None = None
                 ) -> None:
        self.con = con
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.timeout_s = timeout_s
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key,
                                         timeout=timeout_s, max_retries=0)
        self._limiter: _Limiter | None = None
        self._sem_loop: Any = None
        self.concurrency = concurrency
        self.max_tokens_total = max_tokens_total
        self.tools = openai_tools() if native_tools else None
        self.max_retries = max_retries
        self.timeout_retries = timeout_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.give_up_streak = give_up_streak
        self.price = (price_in_per_m, price_out_per_m)
        self.log: Callable[[str], None] = log or (lambda m: None)
        self.gen_run_id: str | None = None  # set by the loop: recorded with each fault
        self._known: set[str] | None = None
        self.call_times: list[float] = []  # completion times, for throughput measurements
        self._pending: dict[str, tuple[dict[str, Any], Completion]] = {}
        self._pending_faults: list[dict[str, Any]] = []
        self._in_flight: dict[int, float] = {}  # request serial -> start (progress lines)
        self._serial = 0
        self._given_up_in_a_row = 0
        self._last_flush = time.monotonic()
        self.faults: Counter[str] = Counter()
        self.stats = {"calls": 0, "cache_hits": 0, "retries": 0, "given_up": 0,
                      "finish_length": 0, "concurrency_lowered": 0, "prompt_tokens": 0,
                      "completion_tokens": 0, "latency_s": 0.0}

    @classmethod
    def from_env(cls, con: duckdb.DuckDBPyConnection | None, *, base_url: str | None = None,
                 model: str | None = None, **kw: Any) -> OpenAITeacher:
        url = base_url or os.environ.get("FORGE_OPENAI_BASE_URL") or \
            os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise TeacherError("the openai teacher needs an endpoint: --base-url or "
                               "$FORGE_OPENAI_BASE_URL (e.g. http://127.0.0.1:8000/v1 from "
                               "`python -m forge serve-teacher`)")
        name = model or os.environ.get("FORGE_OPENAI_MODEL") or "offline-planner-v1"
        return cls(con, url, name, resolve_api_key(), **kw)

    def usage(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self.stats)
        s["est_cost_usd"] = round(s["prompt_tokens"] * self.price[0] / 1e6
                                  + s["completion_tokens"] * self.price[1] / 1e6, 6)
        s["latency_s"] = round(s["latency_s"], 3)
        # Decode speed as the endpoint delivered it (completion tokens per second of request
        # latency; with concurrency > 1 the aggregate rate is higher).
        s["completion_tok_per_s"] = round(s["completion_tokens"] / s["latency_s"], 2) \
            if s["latency_s"] else 0.0
        s["faults"] = dict(self.faults)
        s["concurrency_limit"] = self._limiter.limit if self._limiter else self.concurrency
        return s

    def progress_line(self) -> str | None:
        """One line on what the endpoint is doing (None when nothing is in flight): a slow
        server otherwise looks like a hung run."""
        if not self._in_flight:
            return None
        now = time.monotonic()
        oldest = now - min(self._in_flight.values())
        s = self.stats
        rate = s["completion_tokens"] / s["latency_s"] if s["latency_s"] else 0.0
        lim = self._limiter.limit if self._limiter else self.concurrency
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return (f"waiting on {self.base_url}: {len(self._in_flight)} request(s) in flight "
                f"(oldest {oldest:.0f} s of a {self.timeout_s:.0f} s timeout), "
                f"concurrency {lim}/{self.concurrency}; {s['calls']} calls done, "
                f"{s['completion_tokens']} completion tokens ({rate:.1f} tok/s per request), "
                f"{s['cache_hits']} cache hits; faults: {faults}")

    async def heartbeat(self, every_s: float) -> None:
        """Log `progress_line()` every `every_s` seconds while requests are in flight."""
        while True:
            await asyncio.sleep(every_s)
            line = self.progress_line()
            if line:
                self.log(line)

    async def preflight(self) -> None:
        """Fail early and clearly when the endpoint is down (instead of per task)."""
        try:
            await self.client.with_options(timeout=10.0).models.list()
        except openai.APIConnectionError as e:
            raise TeacherUnreachable(
                f"cannot reach the OpenAI-compatible endpoint at {self.base_url} ({e}); start "
                f"it (e.g. `python -m forge serve-teacher`) or fix --base-url") from None
        except openai.AuthenticationError:
            raise TeacherError(f"the endpoint at {self.base_url} rejected the API key "
                               f"(set ${KEY_ENVS[0]})") from None
        except openai.APIStatusError:
            pass  # some servers have no /models: the first chat call will tell

    # -- cache -------------------------------------------------------------------------------
    # DuckDB point queries and single-row inserts cost ~4 ms each (a commit per statement),
    # which alone would eat a third of the budget at 64 requests/s. So the keys in the store
    # are loaded once (a miss needs no query) and new rows are flushed in bulk, at most
    # `flush_s` seconds or `flush_rows` rows apart: a hard kill can lose (and so pay again
    # for) at most that window of calls.
    flush_s = 1.0
    flush_rows = 64

    def _keys(self) -> set[str]:
        if self._known is None:
            self._known = set() if self.con is None else {
                r[0] for r in self.con.execute("SELECT call_key FROM llm_calls").fetchall()}
        return self._known

    def _lookup(self, key: str) -> Completion | None:
        if self.con is None:
            return None
        pending = self._pending.get(key)
        if pending is not None:
            return Completion(**{**pending[1].__dict__, "cached": True})
        if key not in self._keys():
            return None
        row = self.con.execute("SELECT response, finish_reason, prompt_tokens, "
                               "completion_tokens, latency_s FROM llm_calls WHERE call_key = ?",
                               [key]).fetchone()
        if row is None or row[0] is None:
            return None
        resp = json.loads(row[0])
        return Completion(resp.get("text", ""), row[1] or "stop", row[2] or 0, row[3] or 0,
                          row[4] or 0.0, cached=True, raw=resp)

    def _store(self, key: str, request: dict[str, Any], c: Completion) -> None:
        if self.con is None:
            return
        self._pending[key] = (request, c)
        if len(self._pending) >= self.flush_rows or \
                time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write buffered calls to llm_calls and faults to llm_faults (one statement each)."""
        self._last_flush = time.monotonic()
        if self.con is None:
            return
        self._flush_faults()
        if not self._pending:
            return
        import pyarrow as pa

        items = list(self._pending.items())
        tbl = pa.table({
            "call_key": [k for k, _ in items],
            "model": [self.model] * len(items),
            "base_url": [self.base_url] * len(items),
            "request": [json.dumps(r) for _, (r, _c) in items],
            "response": [json.dumps({"text": c.text, **c.raw}) for _, (_r, c) in items],
            "finish_reason": [c.finish_reason for _, (_r, c) in items],
            "prompt_tokens": pa.array([c.prompt_tokens for _, (_r, c) in items], pa.int64()),
            "completion_tokens": pa.array([c.completion_tokens for _, (_r, c) in items],
                                          pa.int64()),
            "latency_s": pa.array([c.latency_s for _, (_r, c) in items], pa.float64())})
        self.con.register("_forge_llm_rows", tbl)
        try:
            self.con.execute(
                "INSERT INTO llm_calls (call_key, model, base_url, request, response, "
                "finish_reason, prompt_tokens, completion_tokens, latency_s) SELECT * FROM "
                "_forge_llm_rows ON CONFLICT (call_key) DO NOTHING")
        finally:
            self.con.unregister("_forge_llm_rows")
        self._keys().update(k for k, _ in items)
        self._pending.clear()

    FAULT_COLS = ("fault_id", "gen_run_id", "call_key", "kind", "status_code", "try_no",
                  "outcome", "wait_s", "elapsed_s", "purpose", "ref", "message")

    def _flush_faults(self) -> None:
        if self.con is None or not self._pending_faults:
            return
        rows = self._pending_faults
        self.con.executemany(
            f"INSERT INTO llm_faults ({', '.join(self.FAULT_COLS)}) VALUES "
            f"({', '.join('?' for _ in self.FAULT_COLS)}) ON CONFLICT (fault_id) DO NOTHING",
            [[r[c] for c in self.FAULT_COLS] for r in rows])
        self._pending_faults = []

    def _record_fault(self, key: str, f: _Fault, try_no: int, outcome: str, wait_s: float,
                      elapsed_s: float) -> None:
        self.faults[f.kind] += 1
        ctx = CALL_CONTEXT.get() or (None, None)
        self._pending_faults.append({
            "fault_id": uuid.uuid4().hex, "gen_run_id": self.gen_run_id, "call_key": key,
            "kind": f.kind, "status_code": f.status, "try_no": try_no, "outcome": outcome,
            "wait_s": round(wait_s, 3), "elapsed_s": round(elapsed_s, 3), "purpose": ctx[0],
            "ref": ctx[1], "message": str(f)[:1000]})

    # -- calls -------------------------------------------------------------------------------
    def _limit(self) -> _Limiter:
        # asyncio primitives bind to the loop they are first used in; the loop may change
        # between rounds (asyncio.run per batch), so make one per loop.
        loop = asyncio.get_running_loop()
        if self._sem_loop is not loop or self._limiter is None:
            self._limiter = _Limiter(self.concurrency)
            self._sem_loop = loop
        return self._limiter

    async def chat(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        wire = wire_messages(messages)
        p = params.to_dict()
        key = call_key(self.model, wire, p, self.tools)
        hit = self._lookup(key)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return hit
        used = self.stats["prompt_tokens"] + self.stats["completion_tokens"]
        if self.max_tokens_total is not None and used >= self.max_tokens_total:
            raise BudgetExhausted(f"token budget of {self.max_tokens_total} used up ({used})")
        kw: dict[str, Any] = {"model": self.model, "messages": wire,
                              "temperature": params.temperature, "top_p": params.top_p,
                              "max_tokens": params.max_tokens}
        if params.seed is not None:
            kw["seed"] = params.seed
        if self.tools is not None:
            kw["tools"] = self.tools
        async with self._limit():
            c = await self._with_retries(key, kw, wire)
        self.stats["calls"] += 1
        self.call_times.append(time.monotonic())
        self.stats["prompt_tokens"] += c.prompt_tokens
        self.stats["completion_tokens"] += c.completion_tokens
        self.stats["latency_s"] += c.latency_s
        self.stats["finish_length"] += c.finish_reason == "length"
        # The stored request is compact (the transcript itself is in the trajectory): storing
        # every call's whole prefix would grow quadratically with episode length.
        self._store(key, {"n_messages": len(wire), "last": wire[-1]["content"][:2000],
                          "params": p, "tools": bool(self.tools)}, c)
        return c

    async def _exchange(self, kw: dict[str, Any], wire: list[dict[str, str]]) -> Completion:
        """One HTTP exchange -> a Completion, or a _Fault saying what went wrong."""
        self._serial += 1
        serial = self._serial
        self._in_flight[serial] = time.monotonic()
        t0 = time.perf_counter()
        try:
            # The low-level post skips the SDK's per-message TypedDict transform, which costs
            # ~8 ms per call on long transcripts (the pipeline must add < 10 %). The body is
            # parsed here, not by the SDK: a body cut off mid-JSON must be a fault, not a
            # JSONDecodeError that ends the run.
            resp = await self.client.post("/chat/completions", body=kw, cast_to=httpx.Response)
            body = resp.content
        except openai.APITimeoutError:
            raise _Fault("timeout", f"no answer within {self.timeout_s:g} s") from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            raise _Fault("connection", f"{type(cause).__name__}: {cause}") from None
        except openai.AuthenticationError:
            raise TeacherError(f"the endpoint at {self.base_url} rejected the API key (set "
                               f"${KEY_ENVS[0]})") from None
        except openai.APIStatusError as e:
            code = e.status_code
            raise _Fault(f"http_{code}", f"HTTP {code}: {str(e.message)[:300]}", code,
                         retry_after_s(e.response.headers), code in RETRY_STATUS) from None
        finally:
            self._in_flight.pop(serial, None)
        latency = time.perf_counter() - t0
        try:
            data = json.loads(body)
        except ValueError as e:
            raise _Fault("bad_body", f"the response body is not JSON ({e}; {len(body)} bytes: "
                                     f"{body[:120]!r})") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or \
                not data["choices"] or not isinstance(data["choices"][0], dict) or \
                not isinstance(data["choices"][0].get("message"), dict):
            raise _Fault("bad_body", f"the response is not a chat completion: "
                                     f"{json.dumps(data)[:200]}")
        try:
            return self._completion(construct_type(type_=ChatCompletion, value=data), wire,
                                    latency)
        except (AttributeError, TypeError, ValueError, IndexError, KeyError) as e:
            raise _Fault("bad_body", f"unreadable chat completion ({e})") from None

    async def _with_retries(self, key: str, kw: dict[str, Any], wire: list[dict[str, str]]
                            ) -> Completion:
        timeouts = 0
        for i in range(self.max_retries + 1):
            t0 = time.perf_counter()
            try:
                c = await self._exchange(kw, wire)
            except _Fault as f:
                elapsed = time.perf_counter() - t0
                if f.kind == "timeout":
                    timeouts += 1
                give_up = (not f.retry or i == self.max_retries
                           or timeouts > self.timeout_retries)
                if give_up:
                    self._record_fault(key, f, i, "gave_up", 0.0, elapsed)
                    self.stats["given_up"] += 1
                    self._given_up_in_a_row += 1
                    ctx = CALL_CONTEXT.get()
                    self.log(f"giving up a call to {self.base_url} after {i + 1} tr"
                             f"{'y' if i == 0 else 'ies'} ({f}); recorded in llm_faults"
                             + (f" for {ctx[0]} {ctx[1]}" if ctx else "")
                             + ("; a slow server needs a larger --request-timeout or smaller "
                                "--max-tokens / --proposal-max-tokens"
                                if f.kind == "timeout" else ""))
                    if f.kind == "timeout":
                        self._limit().lower()
                        self.stats["concurrency_lowered"] += 1
                    if self._given_up_in_a_row >= self.give_up_streak:
                        raise TeacherUnreachable(
                            f"the endpoint at {self.base_url} failed {self._given_up_in_a_row} "
                            f"calls in a row (last: {f}); stopping the run") from None
                    raise EndpointFault(f.kind, f"the endpoint at {self.base_url} failed this "
                                                f"call {i + 1} time(s); last: {f}", i + 1
                                        ) from None
                wait = self._wait(f, i)
                self._record_fault(key, f, i, "retried", wait, elapsed)
                self.stats["retries"] += 1
                await asyncio.sleep(wait)
                continue
            self._given_up_in_a_row = 0
            self._limit().success()
            return c
        raise AssertionError("unreachable")

    def _wait(self, f: _Fault, i: int) -> float:
        """Back-off before retrying after fault `f` on try `i`."""
        if f.kind == "timeout":
            # The server is most likely still generating the abandoned request: sending it
            # again now would double its work. Keep this slot taken for another timeout
            # (time for the abandoned generation to finish) and halve the concurrency.
            lim = self._limit().lower()
            self.stats["concurrency_lowered"] += 1
            wait = min(self.timeout_s, self.max_wait_s)
            self.log(f"a request to {self.base_url} timed out after {self.timeout_s:g} s; the "
                     f"server may still be generating it, so it is retried once after {wait:g} "
                     f"s and concurrency is lowered to {lim}. A slow server needs a larger "
                     f"--request-timeout or smaller --max-tokens / --proposal-max-tokens.")
            return wait
        backoff = self.backoff_s * 2 ** i * (0.5 + random.random())
        if f.retry_after is not None:
            # Honour the server's Retry-After (a little jitter on top, so that the requests it
            # turned away do not all come back at the same instant), within max_wait_s.
            return min(self.max_wait_s, f.retry_after * (1 + 0.1 * random.random()))
        return min(self.max_wait_s, backoff)

    def _completion(self, resp: Any, wire: list[dict[str, str]], latency: float) -> Completion:
        choice = resp.choices[0]
        msg = choice.message
        text = msg.content or ""
        calls = getattr(msg, "tool_calls", None) or []
        if calls:
            fn = calls[0].function
            try:
                args = json.loads(fn.arguments or "{}")
            except ValueError:
                args = fn.arguments  # kept as is: the env reports the malformed call
            text = render_action(fn.name, args if isinstance(args, dict) else {}, text) \
                if isinstance(args, dict) else text + f"<action>{fn.arguments}</action>"
        usage = resp.usage
        pt = usage.prompt_tokens if usage else sum(estimate_tokens(m["content"]) for m in wire)
        ct = usage.completion_tokens if usage else estimate_tokens(text)
        return Completion(text, choice.finish_reason or "stop", int(pt), int(ct), latency,
                          raw={"finish_reason": choice.finish_reason})
