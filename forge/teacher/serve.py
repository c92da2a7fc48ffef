"""`python -m forge serve-teacher`: the offline teacher behind an OpenAI-compatible API.

    POST /v1/chat/completions   (model, messages, temperature, top_p, max_tokens, seed, tools)
    GET  /v1/models

It lets the OpenAI path be tested for real over HTTP, and lets other tools use the planner as a
chat model. `--latency` adds a fixed delay per request (to measure the pipeline's overhead
against C/L), `--error-rate` answers that fraction of requests, evenly spread, with 429/503
(to exercise retries). Streaming is not supported (400). Usage is reported with a
4-characters-per-token estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from forge.teacher.base import GenParams
from forge.teacher.offline import OfflineTeacher


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = "offline-planner-v1"
    messages: list[dict[str, Any]]
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None
    stream: bool = False


def create_app(teacher: OfflineTeacher, latency_s: float = 0.0, error_rate: float = 0.0,
               rng_seed: int = 0) -> FastAPI:
    app = FastAPI(title="forge offline teacher", version="1")
    rng = random.Random(rng_seed)
    state = {"requests": 0, "errors_injected": 0}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": teacher.name, "object": "model",
                                            "owned_by": "forge"}]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, **state}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> Any:
        state["requests"] += 1
        if req.stream:
            raise HTTPException(400, "streaming is not supported by the offline teacher")
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        k = state["requests"]
        # Evenly spread, deterministic: request k fails when floor(k * rate) steps up.
        if error_rate > 0 and int(k * error_rate) != int((k - 1) * error_rate):
            state["errors_injected"] += 1
            code = rng.choice([429, 503])
            return JSONResponse({"error": {"message": "injected error", "code": code}},
                                status_code=code)
        msgs = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                for m in req.messages]
        params = GenParams(temperature=req.temperature, top_p=req.top_p,
                           max_tokens=req.max_tokens or 1024, seed=req.seed)
        c = teacher.complete(msgs, params)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": teacher.name,
                "choices": [{"index": 0, "finish_reason": c.finish_reason,
                             "message": {"role": "assistant", "content": c.text}}],
                "usage": {"prompt_tokens": c.prompt_tokens,
                          "completion_tokens": c.completion_tokens,
                          "total_tokens": c.prompt_tokens + c.completion_tokens}}

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model: str = "auto",
          latency_s: float = 0.0, error_rate: float = 0.0, mistake_rate: float = 0.03,
          n_sampled: int | None = None) -> None:
    import uvicorn

    from forge.gym.env import CachedModel
    from forge.synth.loop import load_model
    from forge.synth.scenarios import DEFAULT_SAMPLED, full_pool
    from forge.teacher.offline import OfflineConfig

    pool = full_pool(n_sampled or DEFAULT_SAMPLED)
    teacher = OfflineTeacher(CachedModel(load_model(model), maxsize=20000), pool.get,
                             OfflineConfig(mistake_rate=mistake_rate))
    app = create_app(teacher, latency_s, error_rate)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextlib.contextmanager
def local_server(*extra_args: str, startup_s: float = 30.0) -> Iterator[str]:
    """Run `python -m forge serve-teacher` on a free localhost port in a subprocess; yield its
    base URL (…/v1) once it answers, and kill it on exit. Tests and benchmarks use this to drive
    the OpenAI path over real HTTP."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "forge", "serve-teacher", "--port", str(port), *extra_args],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve-teacher did not start on port {port}")
            time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
