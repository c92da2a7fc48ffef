"""An OpenAI-compatible teacher: async, bounded concurrency, retries, a DuckDB call cache and a
token budget.

- Endpoint: --base-url / $FORGE_OPENAI_BASE_URL / $OPENAI_BASE_URL; model: --llm-model /
  $FORGE_OPENAI_MODEL. The API key comes from $FORGE_OPENAI_API_KEY or $OPENAI_API_KEY, or from
  a Prefect Secret block named by $FORGE_OPENAI_SECRET_BLOCK - never from a flag or a flow
  parameter (Prefect stores parameters), and it is never written to DuckDB or logs: the cache
  key and the stored request contain the model, messages and generation parameters only.
- Cache: every call is keyed by sha256(model, messages, generation parameters, tools); a hit
  returns the stored response without a request, so a rerun or a resumed run never pays twice.
- Retries: 429, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter (the client's own retries are off so that we count them).
- Budget: once prompt + completion tokens reach `max_tokens_total`, the next uncached call
  raises BudgetExhausted and the loop stops cleanly.
- Transcripts use role `tool` for observations; on the wire (text protocol) they are sent as
  `user` messages holding `<ans>...</ans>`, which every chat endpoint accepts. With native tools
  the catalogue is also passed as `tools`, and a returned tool call becomes an `<action>` turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from typing import Any

import duckdb
import openai
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

KEY_ENVS = ("FORGE_OPENAI_API_KEY", "OPENAI_API_KEY")
SECRET_BLOCK_ENV = "FORGE_OPENAI_SECRET_BLOCK"
RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
             openai.APIConnectionError)


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
                 backoff_s: float = 0.5, price_in_per_m: float = 0.0,
                 price_out_per_m: float = 0.0) -> None:
        self.con = con
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key,
                                         timeout=timeout_s, max_retries=0)
        self.sem = asyncio.Semaphore(concurrency)
        self._sem_loop: Any = None
        self.concurrency = concurrency
        self.max_tokens_total = max_tokens_total
        self.tools = openai_tools() if native_tools else None
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.price = (price_in_per_m, price_out_per_m)
        self._known: set[str] | None = None
        self.call_times: list[float] = []  # completion times, for throughput measurements
        self._pending: dict[str, tuple[dict[str, Any], Completion]] = {}
        self._last_flush = time.monotonic()
        self.stats = {"calls": 0, "cache_hits": 0, "retries": 0, "prompt_tokens": 0,
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
        s = dict(self.stats)
        s["est_cost_usd"] = round(s["prompt_tokens"] * self.price[0] / 1e6
                                  + s["completion_tokens"] * self.price[1] / 1e6, 6)
        s["latency_s"] = round(s["latency_s"], 3)
        return s

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
        """Write buffered calls to llm_calls in one statement."""
        self._last_flush = time.monotonic()
        if self.con is None or not self._pending:
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

    # -- calls -------------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        # A Semaphore binds to the loop it is first used in; the loop may change between
        # rounds (asyncio.run per batch), so make one per loop.
        loop = asyncio.get_running_loop()
        if self._sem_loop is not loop:
            self.sem = asyncio.Semaphore(self.concurrency)
            self._sem_loop = loop
        return self.sem

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
        async with self._semaphore():
            t0 = time.perf_counter()
            resp = await self._with_retries(kw)
            latency = time.perf_counter() - t0
        c = self._completion(resp, wire, latency)
        self.stats["calls"] += 1
        self.call_times.append(time.monotonic())
        self.stats["prompt_tokens"] += c.prompt_tokens
        self.stats["completion_tokens"] += c.completion_tokens
        self.stats["latency_s"] += latency
        # The stored request is compact (the transcript itself is in the trajectory): storing
        # every call's whole prefix would grow quadratically with episode length.
        self._store(key, {"n_messages": len(wire), "last": wire[-1]["content"][:2000],
                          "params": p, "tools": bool(self.tools)}, c)
        return c

    async def _with_retries(self, kw: dict[str, Any]) -> Any:
        for i in range(self.max_retries + 1):
            try:
                # The low-level post skips the SDK's per-message TypedDict transform, which
                # costs ~8 ms per call on long transcripts (the pipeline must add < 10 %).
                return await self.client.post("/chat/completions", body=kw,
                                              cast_to=ChatCompletion)
            except RETRYABLE as e:
                if i == self.max_retries:
                    if isinstance(e, openai.APIConnectionError | openai.APITimeoutError):
                        raise TeacherUnreachable(
                            f"the endpoint at {self.base_url} stopped answering after "
                            f"{i + 1} tries: {e}") from None
                    raise TeacherError(f"the endpoint at {self.base_url} kept failing after "
                                       f"{i + 1} tries: {e}") from None
                self.stats["retries"] += 1
                await asyncio.sleep(self.backoff_s * 2 ** i * (0.5 + random.random()))
        raise AssertionError("unreachable")

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
