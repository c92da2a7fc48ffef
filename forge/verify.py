"""`python -m forge.verify FILE.jsonl [--out verdicts.jsonl]`: verify trajectories.

Reads one trajectory per line, writes one verdict per line (JSON, same order, with the line
number) and prints a per-stage summary: how many trajectories each stage checked and rejected, by
reason (APIGen's per-stage failure table). Malformed lines - not UTF-8, not JSON, truncated,
longer than --max-line-bytes - are rejected at the format stage with a reason and never stop the
run. The exit code is non-zero only for I/O problems (unreadable input, unwritable output, no
model), never because trajectories failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from verifiers import STAGES, TrajectoryVerifier, VerifierResult

MAX_LINE_BYTES = 4_000_000
BATCH = 64  # lines verified together (one batched model call per batch)
EXIT_IO = 2


def read_lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw bytes) per line; None for a line longer than max_bytes (skipped
    without holding it in memory)."""
    n = 0
    while True:
        chunk = f.readline(max_bytes + 1)
        if not chunk:
            return
        n += 1
        if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
            while True:  # drain the rest of the oversized line
                more = f.readline(1 << 20)
                if not more or more.endswith(b"\n"):
                    break
            yield n, None
            continue
        yield n, chunk


def _reject(reason: str, message: str) -> list[VerifierResult]:
    return [VerifierResult("format", "fail", reason, message)]


def parse_line(raw: bytes | None, max_bytes: int
               ) -> tuple[Any, list[VerifierResult] | None]:
    """(parsed object, None) or (None, format rejection)."""
    if raw is None:
        return None, _reject("line_too_long", f"line longer than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, _reject("not_utf8", f"line is not UTF-8 text: {e}")
    if not text.strip():
        return None, _reject("empty_line", "empty line")
    try:
        return json.loads(text), None
    except ValueError as e:
        return None, _reject("not_json", f"line is not JSON (truncated?): {str(e)[:200]}")
    except RecursionError:
        return None, _reject("not_json", "line nests too deeply")


def _id(obj: Any) -> str | None:
    return obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None


def verify_lines(v: TrajectoryVerifier, raws: list[bytes | None], max_bytes: int
                 ) -> list[tuple[str | None, list[VerifierResult]]]:
    """Verify a batch of lines (batched model predictions, see TrajectoryVerifier)."""
    parsed = [parse_line(r, max_bytes) for r in raws]
    good = [obj for obj, rej in parsed if rej is None]
    verdicts = iter(v.verify_many(good))
    return [(_id(obj), rej if rej is not None else next(verdicts)) for obj, rej in parsed]


def verify_line(v: TrajectoryVerifier, raw: bytes | None, max_bytes: int
                ) -> tuple[str | None, list[VerifierResult]]:
    return verify_lines(v, [raw], max_bytes)[0]


class Summary:
    def __init__(self) -> None:
        self.total = 0
        self.passed = 0
        self.checked: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.uncertain: Counter[str] = Counter()
        self.reasons: dict[str, Counter[str]] = {s: Counter() for s in STAGES}

    def add(self, results: list[VerifierResult]) -> None:
        self.total += 1
        for r in results:
            self.checked[r.stage] += 1
            if not r.passed:
                (self.uncertain if r.status == "uncertain" else self.failed)[r.stage] += 1
                self.reasons[r.stage][r.reason] += 1
        if TrajectoryVerifier.passed(results):
            self.passed += 1

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "passed": self.passed, "stages": {
            s: {"checked": self.checked[s], "failed": self.failed[s],
                "uncertain": self.uncertain[s], "reasons": dict(self.reasons[s].most_common())}
            for s in STAGES}}

    def table(self) -> str:
        lines = [f"{'stage':<10} {'checked':>8} {'failed':>7} {'uncert.':>7}  reasons"]
        for s in STAGES:
            rs = ", ".join(f"{k} {n}" for k, n in self.reasons[s].most_common())
            lines.append(f"{s:<10} {self.checked[s]:>8} {self.failed[s]:>7} "
                         f"{self.uncertain[s]:>7}  {rs}")
        pct = 100.0 * self.passed / self.total if self.total else 0.0
        lines.append(f"passed: {self.passed}/{self.total} ({pct:.1f} %)")
        return "\n".join(lines)


def load_model(model_dir: str | None, closed_form: bool) -> Any:
    if closed_form:
        from forge.gym.closed_form import ClosedFormModel

        return ClosedFormModel()
    from forge.experiment_model import ExperimentModel

    return ExperimentModel.load(model_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge.verify", description=__doc__.split("\n")[0])
    ap.add_argument("file", help="trajectories, one JSON object per line")
    ap.add_argument("--out", help="verdicts JSONL (default: FILE.verdicts.jsonl)")
    ap.add_argument("--summary", help="also write the summary as JSON here")
    ap.add_argument("--model-dir", default=None, help="Experiment Model directory")
    ap.add_argument("--closed-form", action="store_true",
                    help="use the closed-form physics model (tests/demos, not ns-3 calibrated)")
    ap.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES)
    args = ap.parse_args(argv)

    src = Path(args.file)
    out = Path(args.out) if args.out else src.with_suffix(".verdicts.jsonl")
    try:
        model = load_model(args.model_dir, args.closed_form)
    except Exception as e:
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return EXIT_IO
    v = TrajectoryVerifier(model)
    summ = Summary()
    t0 = time.perf_counter()
    try:
        with src.open("rb") as f, out.open("w") as w:
            batch: list[tuple[int, bytes | None]] = []

            def flush() -> None:
                done = verify_lines(v, [r for _, r in batch], args.max_line_bytes)
                for (lineno, _), (tid, results) in zip(batch, done, strict=True):
                    summ.add(results)
                    last = results[-1]
                    w.write(json.dumps({
                        "line": lineno, "id": tid,
                        "passed": TrajectoryVerifier.passed(results), "stage": last.stage,
                        "reason": last.reason, "results": [r.to_dict() for r in results]},
                        default=str) + "\n")
                batch.clear()

            for item in read_lines(f, args.max_line_bytes):
                batch.append(item)
                if len(batch) >= BATCH:
                    flush()
            flush()
        if args.summary:
            Path(args.summary).write_text(json.dumps(summ.to_dict(), indent=2) + "\n")
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_IO
    dt = time.perf_counter() - t0
    print(summ.table())
    print(f"{summ.total} line(s) in {dt:.2f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
