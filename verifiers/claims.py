"""Stage 4, claims: every figure the final answer states must be what was observed for what the
sentence names.

Matching a figure against *any* observed number lets fabrications through: with dozens of KPIs
per observation, an invented throughput often equals some unrelated delay or power. So each
figure is bound, where the sentence can be parsed, to

- an **entity**: the nearest `UE 5`, `cell 2`, `QCI 9`, `UE *`, `all cells` or `the network` in
  its clause (clauses are split at `.`, `;` and `!`/`?`);
- a **metric**: the unit written after it (`Mbps`, `ms`, `dB`, `dBm`, `W`, `RBs`, `UEs`...) and
  the nearest metric word of the clause (`throughput`, `delay`, `PRB utilisation`,
  `satisfaction`, `handover`, `SINR`, ..., or a raw metric key such as `n_ues`), intersected
  when both are present;
- a **phase**: `from X to Y`, `X before, Y after`, `is now X`, `already X`: before means measured
  before the first configuration change, after means measured after the last one.

Observations are indexed the same way: a number belongs to the entity of the object it sits in
(`{"ue": 5, ...}`, `{"cell": 2, ...}`, `{"qci": 9, ...}`, an alarm's `entity`; the network
otherwise, or the filter of an `aggregate_kpi` call), to the metric of its key (a `value` key
takes the object's `metric`), and to the phase of its step. Predictions (`what_if`,
`kpi_delta`, `estimate_*`) ground figures stated without a phase, never a before/after claim.

A figure is grounded when a number bound like it equals it to its written precision or within
1 % (percentages may match ratios: 85 % ~ 0.85). Kept from the unbound rule, because they are not
measurements: figures inside `<answer>` (the outcome stage judges those), figures of the
instruction in clauses without a phase (targets, thresholds, snapshot values), text quoted
verbatim from an observation (a change's `description`), identifiers (`cell 2`, `UE 14`,
`QCI 9`, `L2`, `#3`, `change 1`), and figures whose clause names neither an entity nor a metric
(these must equal some observed number, as before).

Reason codes: `ungrounded_number` (observed nowhere), `misattributed_number` (observed, but not
for the entity and metric the sentence names), `wrong_phase` (the named entity and metric had this
value, but not at the time claimed: a before/after swap, a stale value reported as the result).
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from forge.gym.goals import ANSWER_RE, NUMBER_RE
from verifiers.base import Context, Stage, VerifierResult, fail, ok

REL_TOL = 0.01
_ID_RE = re.compile(r"(?:\b(?:cells?|ues?|qcis?|slices?|changes?|steps?|L)\s*:?\s*#?|#)$",
                    re.IGNORECASE)
# Tools whose numbers are predictions of a state, not measurements of one.
PREDICTING = frozenset({"what_if", "kpi_delta", "estimate_capacity", "estimate_energy_saving",
                        "sinr_to_cqi"})
CONFIGURING = frozenset({"set_tx_power", "set_bandwidth", "set_scheduler", "set_handover_params",
                         "set_handover_algorithm", "force_handover", "set_cell_state",
                         "set_ue_qci", "set_ue_server", "shape_traffic", "graceful_degradation",
                         "rollback"})

# Observation keys (and raw metric names) -> metric family.
KEY_FAMILY = {
    "dl_throughput_mbps": "dl_throughput", "dl_throughput_before": "dl_throughput",
    "dl_throughput_after": "dl_throughput", "p5_dl_throughput_mbps": "dl_throughput",
    "ul_throughput_mbps": "ul_throughput",
    "dl_offered_mbps": "dl_offered", "dl_rate_mbps": "dl_offered",
    "ul_offered_mbps": "ul_offered", "ul_rate_mbps": "ul_offered",
    "delay_ms": "delay", "mean_delay_ms": "delay", "max_delay_ms": "delay",
    "delay_before": "delay", "delay_after": "delay", "ul_delay_ms": "delay",
    "delay_budget_ms": "delay", "loss_budget": "loss",
    "loss_ratio": "loss", "mean_loss_ratio": "loss",
    "rsrp_dbm": "rsrp", "mean_rsrp_dbm": "rsrp", "min_rsrp_dbm": "rsrp",
    "sinr_db": "sinr", "mean_sinr_db": "sinr", "min_sinr_db": "sinr",
    "cqi": "cqi", "handovers": "handovers", "total_handovers": "handovers",
    "dl_satisfaction": "satisfaction", "min_dl_satisfaction": "satisfaction",
    "mean_dl_satisfaction": "satisfaction",
    "prb_utilization": "prb", "max_prb_utilization": "prb", "load": "prb",
    "prb_before": "prb", "prb_after": "prb",
    "power_w": "power", "total_power_w": "power", "power_saved_w": "power",
    "tx_power_dbm": "tx_power", "bandwidth_rbs": "bandwidth",
    "ho_hysteresis_db": "hysteresis", "hysteresis_db": "hysteresis",
    "ho_ttt_ms": "ttt", "ttt_ms": "ttt",
    "n_ues": "n_ues", "n_cells": "n_cells", "n_active_cells": "n_cells",
    "sla_violations": "sla_violations", "violations": "sla_violations", "count": "count",
    "capacity_mbps": "capacity", "dl_capacity_mbps": "capacity", "headroom_mbps": "capacity",
}
ALARM_FAMILY = {"low_sinr": "sinr", "high_loss": "loss", "delay_budget_exceeded": "delay",
                "low_throughput": "satisfaction", "cell_overload": "prb"}
# Words of a sentence -> metric families (first match of each pattern; nearest to the figure
# wins when a clause names several).
_WORDS: list[tuple[re.Pattern[str], frozenset[str]]] = [
    (re.compile(p, re.I), frozenset(f)) for p, f in [
        (r"uplink", {"ul_throughput"}),
        (r"downlink|throughput|\bdelivers?\b", {"dl_throughput"}),
        (r"\boffered\b(?! rate)", {"dl_offered", "ul_offered"}),
        (r"delay|latency", {"delay"}),
        (r"\bprb\b|utili[sz]ation|\bload\b", {"prb"}),
        (r"satisf|of its offered rate", {"satisfaction"}),
        (r"violation", {"sla_violations"}),
        (r"handover", {"handovers"}),
        (r"\brsrp\b|received power", {"rsrp"}),
        (r"\bsinr\b", {"sinr"}),
        (r"\bcqi\b", {"cqi"}),
        (r"\bloss|\bloses\b|\blost\b", {"loss"}),
        (r"tx power|transmit power|\btransmits\b", {"tx_power"}),
        (r"power draw|\bdraws?\b|energy|consum", {"power"}),
        (r"resource blocks|bandwidth", {"bandwidth"}),
        (r"hysteresis", {"hysteresis"}),
        (r"time.to.trigger|\bttt\b", {"ttt"}),
        (r"capacity|headroom", {"capacity"}),
    ]]
_RAW_KEY_RE = re.compile(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b")
# Units written right after a figure -> metric families.
_UNITS: list[tuple[re.Pattern[str], frozenset[str]]] = [
    (re.compile(p, re.I), frozenset(f)) for p, f in [
        (r"mbps\b", {"dl_throughput", "ul_throughput", "dl_offered", "ul_offered", "capacity"}),
        (r"ms\b", {"delay", "ttt"}),
        (r"dbm\b", {"rsrp", "tx_power"}),
        (r"db\b", {"sinr", "hysteresis"}),
        (r"w\b|watts?\b", {"power"}),
        (r"(?:rbs?|resource blocks)\b", {"bandwidth"}),
        (r"(?:ues|users)\b", {"n_ues"}),
        (r"(?:active )?cells\b", {"n_cells"}),
        (r"(?:sla )?violations?\b", {"sla_violations"}),
        (r"handovers?\b", {"handovers"}),
    ]]
_ENTITY_RE = re.compile(r"\b(ue|cell|qci)\s*#?\s*(\d+|\*)|\ball cells\b|\bthe network\b",
                        re.I)
_CLAUSE_RE = re.compile(r"(?<=[.;!?])\s+|(?<=:)\s+(?=[A-Z])")
_TARGET_RE = re.compile(r"\b(?:target|threshold|goal|budget|at least|at most|below|above)"
                        r"\b[^.;]*$", re.I)
_FROM_TO_RE = re.compile(r"\bfrom\s+(\S+)(?:\s+[a-z%]+)?\s+to\s+(\S+)", re.I)


@dataclass
class Facts:
    """Observed numbers indexed by (entity, metric family), with the phase they belong to."""

    by_key: dict[tuple[str, str], list[tuple[float, str]]] = field(
        default_factory=lambda: defaultdict(list))
    anywhere: list[float] = field(default_factory=list)
    instruction: list[float] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)
    changed: bool = False

    def add(self, entity: str, family: str, value: float, phase: str) -> None:
        self.by_key[(entity, family)].append((value, phase))
        kind, _, idx = entity.partition(":")
        if idx and idx != "*":
            self.by_key[(f"{kind}:*", family)].append((value, phase))


def _numbers_in(obj: Any, out: list[float]) -> None:
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        out.append(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _numbers_in(v, out)
    elif isinstance(obj, str):
        out.extend(float(m.group()) for m in NUMBER_RE.finditer(obj))


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _entity_of(d: dict[str, Any], default: str) -> str:
    e = d.get("entity")
    if isinstance(e, str) and re.fullmatch(r"(ue|cell|qci):\d+", e):
        return e
    for k in ("ue", "cell", "qci"):
        if _is_num(d.get(k)):
            return f"{k}:{int(d[k])}"
    return default


def _walk(obj: Any, entity: str, metric: str | None, phase: str, facts: Facts,
          family: str | None = None) -> None:
    if isinstance(obj, dict):
        ent = _entity_of(obj, entity)
        m = obj["metric"] if isinstance(obj.get("metric"), str) else metric
        if obj.get("type") in ALARM_FAMILY:
            m = ALARM_FAMILY[obj["type"]]
        id_key = ent.partition(":")[0] if ent != entity else None
        for k, v in obj.items():
            if k == id_key or k == "entity":
                continue
            fam: str
            if k == "value":
                fam = KEY_FAMILY.get(m, m) if isinstance(m, str) else "value"
            elif k == "field" or k in ("old", "new"):
                continue
            else:
                fam = KEY_FAMILY.get(k, str(k))
            _walk(v, ent, m, phase, facts, fam)
        # A configure observation's `changed` entries: {"entity", "field", "old", "new"}.
        if isinstance(obj.get("field"), str):
            ffam = KEY_FAMILY.get(obj["field"], str(obj["field"]))
            for k in ("old", "new"):
                if _is_num(obj.get(k)):
                    facts.add(ent, ffam, float(obj[k]), "change")
    elif isinstance(obj, list):
        for v in obj:
            _walk(v, entity, metric, phase, facts, family)
    elif _is_num(obj) and family is not None:
        facts.add(entity, family, float(obj), phase)


def collect_facts(ctx: Context) -> Facts:
    assert ctx.traj is not None
    facts = Facts()
    calls = [c for _, c in ctx.actions]
    obs = ctx.observations
    # Steps of successful configuration changes: phases are relative to the first and last.
    changes = [i for (i, o), c in zip(obs, calls, strict=False)
               if isinstance(o, dict) and o.get("ok") and isinstance(c, dict)
               and c.get("tool") in CONFIGURING]
    facts.changed = bool(changes)
    for (i, o), call in zip(obs, calls, strict=False):
        _numbers_in(o, facts.anywhere)
        if not (isinstance(o, dict) and o.get("ok") and isinstance(call, dict)):
            continue
        tool = call.get("tool")
        args = call.get("args") if isinstance(call.get("args"), dict) else {}
        assert isinstance(args, dict)
        if tool in PREDICTING:
            phase = "predicted"
        elif not changes:
            phase = "any"
        elif i < changes[0]:
            phase = "before"
        elif i > changes[-1]:
            phase = "after"
        else:
            phase = "between"
        res = o.get("result")
        _quoted(res, facts.quoted)
        default = "network"
        if tool in ("aggregate_kpi", "compute_percentile", "rank_worst_ues"):
            if _is_num(args.get("cell")):
                default = f"cell:{int(args['cell'])}"
            elif _is_num(args.get("qci")):
                default = f"qci:{int(args['qci'])}"
            else:
                default = "ue:*"
        _walk(res, default, None, phase, facts)
        if default == "ue:*" and isinstance(res, dict) and _is_num(res.get("value")):
            m = res.get("metric")
            if isinstance(m, str):  # an unfiltered aggregate is a network figure too
                facts.add("network", KEY_FAMILY.get(m, m), float(res["value"]), phase)
    _instruction_facts(ctx.traj.messages[1].content, facts)
    facts.anywhere.extend(facts.instruction)
    facts.anywhere.sort()
    facts.instruction.sort()
    facts.quoted.sort(key=len, reverse=True)
    return facts


def _instruction_facts(text: str, facts: Facts) -> None:
    """The task's own figures: JSON it embeds (a KPI snapshot, the success criterion) is indexed
    like an observation, and its sentences ("Cell 2 radiates 27.6 dBm") like an answer's."""
    _numbers_in(text, facts.instruction)
    dec = json.JSONDecoder()
    prose, k = [], 0
    while k < len(text):
        j = text.find("{", k)
        if j < 0:
            prose.append(text[k:])
            break
        prose.append(text[k:j])
        try:
            obj, end = dec.raw_decode(text, j)
        except ValueError:
            prose.append("{")
            k = j + 1
            continue
        _walk(obj, "network", None, "any", facts)
        k = end
    for c in parse_claims(" ".join(prose)):
        if c.in_answer_tag or (c.entity is None and c.families is None):
            continue
        for fam in c.families or {"unknown"}:
            facts.add(c.entity or "network", fam, c.value / 100.0 if c.percent else c.value,
                      "any")


def _quoted(obj: Any, out: list[str]) -> None:
    """Observed texts with figures in them (change descriptions): quoting one is grounded."""
    if isinstance(obj, str):
        if len(obj) >= 12 and any(ch.isdigit() for ch in obj):
            out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _quoted(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _quoted(v, out)


# --- the answer side ---------------------------------------------------------------------------
@dataclass
class Claim:
    literal: str
    value: float
    percent: bool
    clause: str
    pos: int = 0  # offset of the figure in the final answer
    entity: str | None = None
    families: frozenset[str] | None = None
    phase: str | None = None
    in_answer_tag: bool = False
    target: bool = False  # "the target of X": a figure of the task, not a measurement

    def describe(self) -> str:
        bits = [b for b in (self.entity, "/".join(sorted(self.families or ())), self.phase) if b]
        return f"{self.literal} ({', '.join(bits)})" if bits else self.literal


def _is_identifier(text: str, start: int) -> bool:
    # A digit glued to a letter or underscore is part of a name (a3_rsrp, QCI9), not a figure.
    if start > 0 and (text[start - 1].isalpha() or text[start - 1] == "_"):
        return True
    return bool(_ID_RE.search(text[max(0, start - 12):start]))


def _entity_at(clause: str, pos: int) -> str | None:
    best: tuple[int, str] | None = None
    for m in _ENTITY_RE.finditer(clause):
        if m.start() <= pos < m.end():
            return None  # the figure is the identifier itself
        if m.group(1):
            ent = f"{m.group(1).lower()}:{m.group(2)}"
        else:
            ent = "cell:*" if m.group().lower() == "all cells" else "network"
        # Preceding mentions are preferred ("UE 5 ... 2.4 Mbps"); a following one only if none.
        dist = pos - m.end() if m.end() <= pos else 10_000 + m.start() - pos
        if best is None or dist < best[0]:
            best = (dist, ent)
    return best[1] if best else None


def _families_at(clause: str, pos: int, end: int) -> frozenset[str] | None:
    tail = clause[end:end + 24].lstrip().lstrip("%").lstrip()
    unit = next((f for rx, f in _UNITS if rx.match(tail)), None)
    hits: list[tuple[int, frozenset[str]]] = []
    for rx, fams in _WORDS:
        for m in rx.finditer(clause):
            hits.append((min(abs(m.start() - pos), abs(m.end() - pos)), fams))
    for m in _RAW_KEY_RE.finditer(clause):
        fam = KEY_FAMILY.get(m.group())
        if fam:
            hits.append((min(abs(m.start() - pos), abs(m.end() - pos)), frozenset({fam})))
    word = min(hits, key=lambda h: h[0])[1] if hits else None
    if unit and word:
        both = unit & word
        return both or word
    return unit or word


def _phase_at(clause: str, start: int, end: int) -> str | None:
    for m in _FROM_TO_RE.finditer(clause):
        if m.start(1) <= start < m.end(1):
            return "before"
        if m.start(2) <= start < m.end(2):
            return "after"
    after = clause[end:end + 30].lower()
    before_txt = clause[max(0, start - 30):start].lower()
    if re.match(r"\s*(?:[a-z%/]+\s*)?\bbefore\b", after):
        return "before"
    if re.match(r"\s*(?:[a-z%/]+\s*)?\bafter\b", after):
        return "after"
    if re.search(r"\b(?:now|afterwards|after the change)\s*(?:is|at|to|of)?\s*$", before_txt):
        return "after"
    if re.search(r"\b(?:already|initially|was|previously)\s*(?:at|of)?\s*$", before_txt):
        return "before"
    return None


def parse_claims(final: str, quoted: list[str] = ()) -> list[Claim]:  # type: ignore[assignment]
    """Every figure of the final answer with what its sentence binds it to."""
    text = final
    for q in quoted:  # text quoted verbatim from an observation is grounded by construction
        if q in text:
            text = text.replace(q, " " * len(q))
    spans = [(m.start(), m.end()) for m in ANSWER_RE.finditer(text)]
    out: list[Claim] = []
    pos = 0
    for clause in _CLAUSE_RE.split(text):
        off = text.find(clause, pos)
        pos = off + len(clause)
        for m in NUMBER_RE.finditer(clause):
            if _is_identifier(clause, m.start()):
                continue
            lit = m.group()
            start = m.start()
            if lit[0] in "+-" and start > 0 and clause[start - 1].isalnum():
                lit, start = lit[1:], start + 1
            lit = lit.rstrip(".")  # "... utilisation 1." ends a sentence
            if not lit or lit in "+-":
                continue
            pct = clause[m.end():m.end() + 2].lstrip().startswith("%")
            c = Claim(lit, float(lit), pct, clause.strip(), off + start)
            if any(a <= off + m.start() < b for a, b in spans):
                c.in_answer_tag = True
            else:
                c.entity = _entity_at(clause, start)
                c.families = _families_at(clause, start, m.end())
                c.phase = _phase_at(clause, start, m.end())
                c.target = bool(_TARGET_RE.search(clause[max(0, start - 24):start]))
            out.append(c)
    return out


def _matches(lit: str, value: float, grounded: list[float]) -> bool:
    decimals = len(lit.split(".")[1]) if "." in lit and "e" not in lit.lower() else 0
    tol = max(0.5 * 10 ** -decimals, REL_TOL * abs(value)) + 1e-9
    j = bisect.bisect_left(grounded, value - tol)
    return j < len(grounded) and grounded[j] <= value + tol


def _value_matches(c: Claim, pool: list[float]) -> bool:
    pool = sorted(pool)
    return _matches(c.literal, c.value, pool) or (
        c.percent and _matches(c.literal, c.value / 100.0, pool))


_PHASES_OK = {"before": {"before", "any", "change"}, "after": {"after", "any", "change"},
              None: {"before", "after", "any", "between", "predicted", "change"}}


def candidates(c: Claim, facts: Facts, phases: set[str] | None) -> list[float]:
    out: list[float] = []
    for (ent, fam), vals in facts.by_key.items():
        if c.entity is not None and ent != c.entity:
            continue
        if c.families is not None and fam not in c.families:
            continue
        out.extend(v for v, ph in vals if phases is None or ph in phases)
    return out


def judge(c: Claim, facts: Facts, bind: bool = True) -> str:
    """'ok' or the reason code of an ungrounded figure. `bind=False` is the old rule (any
    observed or instructed number), kept for measuring what binding changes."""
    if not bind or c.in_answer_tag or (c.entity is None and c.families is None):
        return "ok" if _value_matches(c, facts.anywhere) else "ungrounded_number"
    if _value_matches(c, candidates(c, facts, _PHASES_OK[c.phase])):
        return "ok"
    if c.target and _value_matches(c, facts.instruction):
        return "ok"
    if not _value_matches(c, facts.anywhere):
        return "ungrounded_number"
    if c.phase is not None and _value_matches(c, candidates(c, facts, None)):
        return "wrong_phase"
    return "misattributed_number"


def check_claims(ctx: Context, bind: bool = True) -> VerifierResult:
    st: Stage = "claims"
    assert ctx.traj is not None
    facts = collect_facts(ctx)
    claims = parse_claims(ctx.final, facts.quoted)
    bad: dict[str, list[str]] = defaultdict(list)
    bound = 0
    for c in claims:
        bound += not c.in_answer_tag and (c.entity is not None or c.families is not None)
        verdict = judge(c, facts, bind)
        if verdict != "ok":
            bad[verdict].append(c.describe())
    if bad:
        # The most specific failure names the verdict: a swap or a misattribution says more
        # than "not observed".
        reason = next(r for r in ("wrong_phase", "misattributed_number", "ungrounded_number")
                      if r in bad)
        what = {"ungrounded_number": "found in no observation",
                "misattributed_number": "observed, but not for the entity/metric the sentence "
                                        "names",
                "wrong_phase": "observed for that entity/metric, but not at the time claimed "
                               "(before vs after the change)"}[reason]
        n = sum(len(v) for v in bad.values())
        return fail(st, reason, f"the final answer states {n} figure(s) not grounded; "
                                f"{what}: {', '.join(bad[reason][:8])}",
                    ungrounded=bad.get("ungrounded_number", [])[:50],
                    misattributed=bad.get("misattributed_number", [])[:50],
                    wrong_phase=bad.get("wrong_phase", [])[:50],
                    n_claims=len(claims), n_bound=bound)
    return ok(st, n_claims=len(claims), n_bound=bound)
