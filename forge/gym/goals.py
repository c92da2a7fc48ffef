"""The goal language: small JSON predicates over KPIs (action tasks) and expected answers (qa).

Grammar (every node is a JSON object with exactly one of these shapes):

    Goal      := Condition | {"all": [Goal, ...]} | {"any": [Goal, ...]} | {"not": Goal}
    Condition := {"target": TARGET, "metric": METRIC, "op": OP, "value": NUMBER}
    TARGET    := "network" | "cell:<i>" | "cell:*" | "ue:<i>" | "ue:*" | "qci:<q>"
    OP        := "<" | "<=" | ">" | ">=" | "==" | "!="
    AnswerGoal:= {"answer": {"type": TYPE, "value": V} | {"type": TYPE, "ref": {target, metric}},
                  "tol_abs": x, "tol_rel": y}
    TYPE      := "number" | "integer" | "boolean" | "string" | "list"

`cell:*` quantifies over active cells, `ue:*` over all UEs (the condition must hold for each).
Metrics per target are listed in `forge.gym.kpis` (UE_METRICS, CELL_METRICS, NETWORK_METRICS,
QCI_METRICS); booleans count as 1/0. Conditions are evaluated on the model's noiseless prediction
of a state. A condition is *uncertain* when the prediction lies outside the model's calibration
domain, or when its verdict changes somewhere in the band of UNCERTAIN_K ensemble standard
deviations: every UE's throughput and delay moved that far against the operator, then in its
favour, with every aggregate recomputed (`KpiView.band`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forge.gym import kpis as K

Op = Literal["<", "<=", ">", ">=", "==", "!="]
TARGET_RE = re.compile(r"^(network|cell:(\d+|\*)|ue:(\d+|\*)|qci:[1-9])$")
UNCERTAIN_K = 2.0
EQ_TOL = 1e-9

_METRICS = {"network": K.NETWORK_METRICS, "cell": K.CELL_METRICS, "ue": K.UE_METRICS,
            "qci": K.QCI_METRICS}


def _kind(target: str) -> str:
    return target.split(":", 1)[0]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(default="network",
                        description="network | cell:<i> | cell:* | ue:<i> | ue:* | qci:<q>")
    metric: str
    op: Op
    value: float

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not TARGET_RE.match(v):
            raise ValueError(f"target {v!r} is not network, cell:<i>, cell:*, ue:<i>, ue:* or "
                             f"qci:<q>")
        return v

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be finite")
        return v

    @model_validator(mode="after")
    def _metric(self) -> Condition:
        allowed = _METRICS[_kind(self.target)]
        if self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} is not a {_kind(self.target)} metric "
                             f"({', '.join(allowed)})")
        return self


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Goal] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Goal] = Field(min_length=1)


class NotGoal(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Goal = Field(alias="not")


Goal = Condition | AllOf | AnyOf | NotGoal


class Ref(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    metric: str

    @model_validator(mode="after")
    def _valid(self) -> Ref:
        Condition(target=self.target, metric=self.metric, op="==", value=0.0)
        return self


class ExpectedAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["number", "integer", "boolean", "string", "list"]
    value: float | int | bool | str | list[int | str] | None = Field(
        default=None, description="The expected answer, fixed when the task was made.")
    ref: Ref | None = Field(default=None,
                            description="Or: read it from the final state (noiseless).")
    tol_abs: float = Field(default=0.0, ge=0.0)
    tol_rel: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _one_source(self) -> ExpectedAnswer:
        if (self.value is None) == (self.ref is None):
            raise ValueError("give exactly one of `value` and `ref`")
        if self.ref is not None and self.type not in ("number", "integer", "boolean"):
            raise ValueError("`ref` answers must be number, integer or boolean")
        return self


class AnswerGoal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: ExpectedAnswer


TaskGoal = Condition | AllOf | AnyOf | NotGoal | AnswerGoal

for _m in (AllOf, AnyOf, NotGoal):
    _m.model_rebuild()


# --- evaluation ----------------------------------------------------------------------------------
@dataclass
class ConditionResult:
    target: str
    metric: str
    op: str
    threshold: float
    value: float | None
    holds: bool
    certain: bool
    margin: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "metric": self.metric, "op": self.op,
                "threshold": self.threshold, "value": self.value, "holds": self.holds,
                "certain": self.certain, "margin": self.margin}


@dataclass
class GoalResult:
    holds: bool
    certain: bool
    conditions: list[ConditionResult] = field(default_factory=list)


def _compare(v: float, op: str, t: float) -> bool:
    if op == "<":
        return v < t
    if op == "<=":
        return v <= t
    if op == ">":
        return v > t
    if op == ">=":
        return v >= t
    if op == "==":
        return abs(v - t) <= EQ_TOL
    return abs(v - t) > EQ_TOL


def _num(x: Any) -> float | None:
    if x is None:
        return None
    return float(x)  # bools count as 1/0


def lookup(view: K.KpiView, target: str, metric: str) -> float | None:
    """A metric of a single entity (no wildcards); None if the entity does not exist."""
    kind, _, idx = target.partition(":")
    if kind == "network":
        return _num(view.network.get(metric))
    i = int(idx)
    if kind == "ue":
        return _num(view.ues[i][metric]) if i < len(view.ues) else None
    if kind == "cell":
        return _num(view.cells[i][metric]) if i < len(view.cells) else None
    q = view.qci.get(i)
    if q is None:  # an empty slice: no UEs, no violations, undefined averages
        return 0.0 if metric in ("n_ues", "sla_violations", "dl_throughput_mbps") else None
    return _num(q[metric])


def band_edges(view: K.KpiView, target: str, metric: str) -> list[float | None]:
    """The metric of one entity at the two edges of the model's uncertainty band
    (pessimistic, optimistic); [] when the band cannot move it (a metric outside BAND_METRICS,
    a prediction without spread). A UE's own metric is read from its two shifted rows alone,
    without rebuilding the network (the same values as the full band's rows)."""
    if metric not in K.BAND_METRICS:
        return []
    kind, _, idx = target.partition(":")
    if kind == "ue":
        i = int(idx)
        rows = view.band_ue(UNCERTAIN_K, i) if i < len(view.ues) else None
        return [_num(r[metric]) for r in rows] if rows else []
    band = view.band(UNCERTAIN_K)
    return [lookup(b, target, metric) for b in band] if band else []


def _condition(c: Condition, view: K.KpiView) -> ConditionResult:
    v = lookup(view, c.target, c.metric)
    if v is None or not math.isfinite(v):
        return ConditionResult(c.target, c.metric, c.op, c.value, v, False, view.in_domain)
    holds = _compare(v, c.op, c.value)
    margin = v - c.value
    edges = band_edges(view, c.target, c.metric)
    certain = view.in_domain and all(
        e is not None and math.isfinite(e) and _compare(e, c.op, c.value) == holds
        for e in edges)
    return ConditionResult(c.target, c.metric, c.op, c.value, v, holds, certain, margin)


def _expand(c: Condition, view: K.KpiView) -> list[Condition]:
    if c.target == "ue:*":
        ids = [f"ue:{u['ue']}" for u in view.ues]
    elif c.target == "cell:*":
        ids = [f"cell:{x['cell']}" for x in view.cells if x["active"]]
    else:
        return [c]
    return [c.model_copy(update={"target": t}) for t in ids]


def evaluate(goal: TaskGoal, view: K.KpiView) -> GoalResult:
    """(holds under the mean prediction, whether that verdict is certain, per-condition detail)."""
    if isinstance(goal, AnswerGoal):
        raise TypeError("an AnswerGoal is checked with match_answer, not evaluate")
    if isinstance(goal, Condition):
        parts = _expand(goal, view)
        if len(parts) == 1:
            one = _condition(parts[0], view)
            return GoalResult(one.holds, one.certain, [one])
        return evaluate(AllOf(all=list(parts)), view)
    if isinstance(goal, NotGoal):
        r = evaluate(goal.not_, view)
        return GoalResult(not r.holds, r.certain, r.conditions)
    children = [evaluate(g, view) for g in (goal.all if isinstance(goal, AllOf) else goal.any)]
    conds = [c for r in children for c in r.conditions]
    if isinstance(goal, AllOf):
        holds = all(r.holds for r in children)
        # False is certain as soon as one child is certainly false.
        certain = (all(r.certain for r in children) if holds
                   else any(r.certain and not r.holds for r in children))
    else:
        holds = any(r.holds for r in children)
        certain = (any(r.certain and r.holds for r in children) if holds
                   else all(r.certain for r in children))
    return GoalResult(holds, certain, conds)


def goal_problems(goal: TaskGoal, n_cells: int, n_ues: int) -> list[str]:
    """Entities the goal names that the scenario does not have."""
    out: list[str] = []

    def walk(g: Any) -> None:
        if isinstance(g, AnswerGoal):
            if g.answer.ref is not None:
                walk(Condition(target=g.answer.ref.target, metric=g.answer.ref.metric, op="==",
                               value=0.0))
        elif isinstance(g, Condition):
            kind, _, idx = g.target.partition(":")
            if idx and idx != "*" and kind in ("cell", "ue"):
                limit = n_cells if kind == "cell" else n_ues
                if int(idx) >= limit:
                    out.append(f"{g.target} does not exist ({limit} {kind}s)")
        elif isinstance(g, NotGoal):
            walk(g.not_)
        else:
            for x in g.all if isinstance(g, AllOf) else g.any:
                walk(x)

    walk(goal)
    return out


# --- answers -------------------------------------------------------------------------------------
NUMBER_RE = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)


@dataclass
class AnswerResult:
    ok: bool
    reason: str
    expected: Any
    got: Any


def extract_answer(text: str) -> str | None:
    m = ANSWER_RE.findall(text)
    return m[-1].strip() if m else None


def _parse(kind: str, s: str) -> Any:
    if kind in ("number", "integer"):
        m = NUMBER_RE.search(s)
        if m is None:
            return None
        x = float(m.group())
        return x if kind == "number" else (int(x) if x.is_integer() else x)
    if kind == "boolean":
        w = s.strip().lower().rstrip(".")
        return True if w in ("true", "yes") else False if w in ("false", "no") else None
    if kind == "list":
        items = [x.strip().strip("'\"") for x in s.strip().strip("[]").split(",") if x.strip()]
        return sorted(int(x) if x.lstrip("-").isdigit() else x.lower() for x in items)
    return s.strip().lower()


def match_answer(goal: AnswerGoal, final_text: str, view: K.KpiView) -> AnswerResult:
    a = goal.answer
    expected: Any = a.value
    if a.ref is not None:
        expected = lookup(view, a.ref.target, a.ref.metric)
        if a.type == "boolean" and expected is not None:
            expected = bool(expected)
        elif a.type == "integer" and expected is not None:
            expected = round(expected)
    raw = extract_answer(final_text)
    if raw is None:
        return AnswerResult(False, "answer_missing", expected, None)
    got = _parse(a.type, raw)
    if got is None or expected is None:
        return AnswerResult(False, "answer_mismatch", expected, raw[:200])
    if a.type in ("number", "integer"):
        ok = abs(float(got) - float(expected)) <= a.tol_abs + a.tol_rel * abs(float(expected))
    elif a.type == "list":
        ok = got == _parse("list", ",".join(str(x) for x in expected))
    elif a.type == "string":
        ok = got == str(expected).strip().lower()
    else:
        ok = got == expected
    return AnswerResult(ok, "ok" if ok else "answer_mismatch", expected, got)
