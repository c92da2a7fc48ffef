"""How corpora/seed_tasks/seed_tasks.jsonl was written: hand-written instructions, grounded.

Every instruction below was written by hand. A seed task must be concrete (a scenario, an entity,
a threshold), so each sentence is a template whose entity and numbers come from the scenario it is
tied to: the entity the sentence talks about (the most starved UE, the busiest cell) and a goal
threshold near the frontier of what the planner's candidate changes reach, exactly as the offline
teacher's task writer picks them (`TaskWriter.instantiate(..., text=...)`). Each sentence is tied
to two scenarios of its family. Run `python -m forge.synth.seed_authoring` to rewrite the file
(it is deterministic); the file, not this script, is the shipped corpus.

Thresholds are placed with the environment's default physics - the shipped Experiment Model
(`load_model("auto")`), on the edges of its uncertainty band like every proposed task - and only
on scenarios inside its calibration domain, so the seeds are solvable and verifiable where the
pipeline runs by default. After recalibrating the model, rerun this script
(`tests/test_synth_seeds.py::test_seed_goals_fit_the_current_physics` says so when they drift).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from forge.gym.env import CachedModel
from forge.ns3.grid import sample_scenario
from forge.synth.loop import load_model
from forge.synth.seeds import SEED_DIR, SeedTask, check
from forge.teacher.proposer import TaskWriter

SEED_BASE = 500_000
PER_TEMPLATE = 2

# (pattern, family or None for any, intended difficulty, hand-written instruction)
ACTION = [
    ("ue_throughput", "coverage_hole", "L2", "UE {ue} lives in the weak spot left by a cell "
     "running at very low power and only gets {thr} Mbps. Diagnose the coverage hole and get "
     "it to at least {t} Mbps."),
    ("ue_throughput", "coverage_hole", "L3", "Coverage complaint from UE {ue}: it asks for "
     "{off} Mbps but receives {thr}. Find out whether power, bandwidth or a handover is the "
     "fix and bring it to {t} Mbps or more."),
    ("ue_throughput", "cell_edge", "L2", "UE {ue} is stuck at the border of cell {cell}, where "
     "interference eats its SINR. Raise its downlink throughput to at least {t} Mbps."),
    ("ue_throughput", "cell_edge", "L3", "Improve the cell-edge experience of UE {ue} "
     "(currently {thr} Mbps): the goal is {t} Mbps. Compare several fixes before you commit."),
    ("ue_throughput", "uniform", "L2", "A premium subscriber on UE {ue} gets {thr} Mbps of the "
     "{off} Mbps they pay for. Lift it to {t} Mbps at least."),
    ("ue_throughput", "hotspot", "L3", "UE {ue} shares the hotspot cell {cell} with many others "
     "and is squeezed to {thr} Mbps. Get it to {t} Mbps without switching anything off."),
    ("ue_throughput", "slices", "L2", "UE {ue} is served by cell {cell} and reports a poor "
     "download rate. Make sure it reaches {t} Mbps."),
    ("ue_delay", "edge_offload", "L1", "UE {ue} runs an AR headset and sees {delay} ms. Move "
     "what needs moving so that its delay is at most {t} ms."),
    ("ue_delay", "edge_offload", "L2", "Latency-critical traffic of UE {ue} still goes to the "
     "cloud. Bring its end-to-end delay to {t} ms or below."),
    ("ue_delay", "slices", "L2", "The robot controller on UE {ue} needs low latency; it "
     "measures {delay} ms now. Get the delay under {t} ms."),
    ("ue_delay", "hotspot", "L3", "UE {ue} suffers queueing delay in a congested cell: "
     "{delay} ms. Reduce it to at most {t} ms."),
    ("ue_delay", "uniform", "L2", "Video calls on UE {ue} stutter; its delay is {delay} ms. "
     "Target: {t} ms or less."),
    ("cell_load", "hotspot", "L2", "Relieve the overloaded cell {cell} (PRB utilisation "
     "{prb}, {n} UEs). Its utilisation must drop to {t} or below."),
    ("cell_load", "hotspot", "L3", "A stadium event overloads cell {cell}. Offload or add "
     "capacity until its PRB utilisation is at most {t}; check predictions first."),
    ("cell_load", "uniform", "L2", "Cell {cell} is the busiest cell at {prb} PRB utilisation. "
     "Bring it down to no more than {t}."),
    ("cell_load", "mobility", "L2", "Cell {cell} carries {n} UEs and little spare capacity. "
     "Get its PRB utilisation to {t} or lower."),
    ("cell_load", "slices", "L3", "Cell {cell} is congested and hurts the slices it serves. "
     "Bring its PRB utilisation to at most {t}."),
    ("energy", "uniform", "L2", "Traffic is low tonight. Cut the network's power from {power} W "
     "to at most {t} W while every UE keeps at least {f} of its offered rate."),
    ("energy", "cell_edge", "L3", "Save energy: switch off what you can so that the site draws "
     "at most {t} W, but no UE may fall below {f} satisfaction."),
    ("energy", "mobility", "L3", "The operator wants an energy-saving mode for this cluster: "
     "at most {t} W in total, minimum satisfaction {f} or more."),
    ("energy", "edge_offload", "L2", "Reduce consumption ({power} W now) to {t} W or less "
     "without starving anyone below {f} of their rate."),
    ("energy", "hotspot", "L3", "Most of the traffic sits in one cell, yet all cells draw "
     "power. Get the total to at most {t} W and keep every UE at {f} satisfaction or better."),
    ("net_satisfaction", "hotspot", "L2", "The worst-served UE gets only {sat} of its offered "
     "rate. Raise the minimum satisfaction to at least {t}."),
    ("net_satisfaction", "coverage_hole", "L3", "Nobody should be left behind: lift the "
     "network's minimum satisfaction from {sat} to {t} or more."),
    ("net_satisfaction", "cell_edge", "L2", "Fairness target: every UE must get at least {t} "
     "of what it asks for."),
    ("net_satisfaction", "uniform", "L2", "Service assurance wants the worst UE at {t} "
     "satisfaction or above (now {sat})."),
    ("slice_sla", "slices", "L3", "Slice QCI {qci} has {viol} SLA violation(s). Meet the slice "
     "SLA better: fewer than {t:g} violations."),
    ("slice_sla", "slices", "L2", "The tenant of QCI {qci} complains about breached SLAs. "
     "Bring the violations of that slice below {t:g}."),
    ("slice_sla", "edge_offload", "L3", "QCI {qci} traffic misses its delay or loss budget for "
     "{viol} UE(s). Reduce that to fewer than {t:g}."),
    ("slice_sla", "hotspot", "L2", "Congestion breaks the SLAs of the QCI {qci} slice. Get its "
     "violation count below {t:g}."),
    ("ue_delay", "mobility", "L2", "UE {ue} is on the move and its latency ({delay} ms) is too "
     "high for its app. Get it to {t} ms or less."),
    # Tickets that name their fix (the diagnosis is done): every configure tool is taught as a
    # fix, including the ones the planner's search rarely picks.
    ("ue_throughput", "mobility", "L1", "UE {ue} walks through cell {cell}'s border and drops "
     "to {thr} Mbps. The mobility study says: fix it by {fix}, and reach {t} Mbps."),
    ("ue_delay", "mobility", "L1", "Moving UE {ue} sees {delay} ms. Apply the agreed fix, "
     "{fix}, so that its delay is at most {t} ms."),
    ("slice_sla", "slices", "L1", "QCI {qci} has {viol} SLA breach(es). The approved change is "
     "{fix}; apply it and get the violations below {t:g}."),
    ("cell_load", "hotspot", "L1", "Cell {cell} is overloaded ({prb}). Engineering suggests "
     "{fix}. Bring its PRB utilisation to {t} or below."),
    ("ue_throughput", "hotspot", "L2", "UE {ue} is squeezed to {thr} Mbps by a heavy user on "
     "the same cell. Planning decided on {fix}: reach {t} Mbps."),
    ("ue_delay", "edge_offload", "L1", "UE {ue} sees {delay} ms. Apply the agreed fix, {fix}, "
     "and bring its delay to {t} ms or less."),
    ("net_satisfaction", "cell_edge", "L2", "The worst UE gets {sat} of its rate. The "
     "diagnosis says {fix}; lift the minimum satisfaction to {t}."),
]
QA = [
    ("qa_busiest", "hotspot", "Which cell is the busiest right now? Give the cell index."),
    ("qa_busiest", "uniform", "Capacity planning asks: which cell has the highest PRB "
     "utilisation?"),
    ("qa_busiest", "slices", "Name the most loaded cell (by PRB utilisation) of this network."),
    ("qa_worst_ue", "cell_edge", "Which UE is the worst served, i.e. has the lowest "
     "satisfaction? Give its index."),
    ("qa_worst_ue", "coverage_hole", "Find the UE that gets the smallest share of its offered "
     "rate (the worst satisfaction)."),
    ("qa_ue_thr", "uniform", "What downlink throughput does UE {ue} get, in Mbps?"),
    ("qa_ue_thr", "hotspot", "A customer on UE {ue} asks how fast their downloads are. Report "
     "the downlink throughput in Mbps."),
    ("qa_ue_delay", "edge_offload", "How large is the end-to-end delay of UE {ue} (ms)?"),
    ("qa_ue_delay", "slices", "Report the current latency of UE {ue} in milliseconds."),
    ("qa_ue_sla", "slices", "Is UE {ue}'s SLA met? Answer yes or no."),
    ("qa_ue_sla", "edge_offload", "Does UE {ue} currently meet its SLA (delay, loss and, for "
     "GBR, rate)? Yes or no."),
    ("qa_ue_serving", "mobility", "Which cell is serving UE {ue} at the moment?"),
    ("qa_ue_serving", "cell_edge", "UE {ue} is attached to which cell?"),
    ("qa_cell_nues", "hotspot", "How many UEs does cell {cell} serve?"),
    ("qa_cell_nues", "uniform", "Count the UEs currently on cell {cell}."),
    ("qa_cell_prb", "hotspot", "What is the PRB utilisation of cell {cell} (0 to 1)?"),
    ("qa_cell_prb", "mobility", "How loaded is cell {cell}? Give its PRB utilisation."),
    ("qa_power", "uniform", "How much power does the whole network draw, in W?"),
    ("qa_power", "cell_edge", "Report the total power consumption of this {n_cells}-cell site "
     "in watts."),
    ("qa_sla_count", "slices", "How many SLA violations does the network have right now?"),
    ("qa_multi_hop", "hotspot", "In the busiest cell, which UE has the lowest downlink "
     "throughput? Give the UE index."),
    ("qa_multi_hop", "uniform", "Find the busiest cell, then its worst UE by throughput. Which "
     "UE is it?"),
    ("snap_busiest", None, "Using only the snapshot below, which cell is the busiest?"),
    ("snap_busiest", None, "Without calling any tool: which cell in the snapshot has the "
     "highest PRB utilisation?"),
    ("snap_lowest", None, "From the snapshot below, which UE has the lowest downlink "
     "throughput?"),
    ("snap_lowest", None, "Read the KPIs below and name the UE with the worst downlink rate."),
    ("snap_count", None, "According to the snapshot, how many UEs does cell {cell} serve?"),
    ("snap_count", None, "From the KPIs below only: count the UEs attached to cell {cell}."),
    ("qa_ue_thr", "cell_edge", "UE {ue} sits far from its cell: how many Mbps does it receive "
     "on the downlink?"),
    ("qa_ue_thr", "coverage_hole", "UE {ue} is near a weak cell. What downlink throughput does "
     "it get (Mbps)?"),
    ("qa_ue_delay", "hotspot", "How many milliseconds of end-to-end delay does UE {ue} "
     "experience?"),
    ("qa_ue_sla", "hotspot", "Is UE {ue} inside its SLA right now? Yes or no."),
    ("qa_cell_nues", "mobility", "How many UEs are camped on cell {cell} at the moment?"),
    ("qa_cell_prb", "uniform", "Give the PRB utilisation of cell {cell}."),
    ("qa_ue_serving", "uniform", "Which cell serves UE {ue}?"),
    ("qa_power", "mobility", "What is the total power draw of this {n_cells}-cell network "
     "(W)?"),
    # Multi-step questions: aggregation and comparison across cells or slices, what-if,
    # closed-form capacity, CQI mapping, listings.
    ("qa_cell_agg", "hotspot", "Which cell's UEs have the {hl} {agg} {ml}? Give the cell "
     "index."),
    ("qa_cell_agg", "uniform", "Across all cells, which cell's UEs see the {hl} {agg} {ml}?"),
    ("qa_cell_pct", "cell_edge", "Which cell has the {hl} {p}th-percentile UE {ml}?"),
    ("qa_cell_gap", "coverage_hole", "Which cell has the largest gap between the mean and the "
     "{agg} {ml} of its UEs?"),
    ("qa_cell_spread", "mobility", "Which cell has the largest spread between its {p1}th and "
     "{p2}th percentile UE {ml}?"),
    ("qa_slice_agg", "slices", "Which slice (QCI) has the {hl} {agg} {ml}?"),
    ("qa_whatif_busy", "hotspot", "If cell {c} were widened to {rbs} RBs, which cell would be "
     "the busiest by predicted PRB utilisation?"),
    ("qa_capacity", "uniform", "What downlink capacity (Mbps) would cell {c} have with {rbs} "
     "RBs, by the closed-form estimate?"),
    ("qa_cqi_of", None, "Which CQI does an LTE UE report at an SINR of {x} dB?"),
    ("qa_cqi_gain", "cell_edge", "If UE {ue}'s SINR rose by {d} dB, which CQI would it "
     "report?"),
    ("qa_list_max", None, "Looking at the cell list, which cell {what}?"),
    ("qa_heavy_ue", "hotspot", "Which UE of cell {c} asks for the most downlink traffic?"),
    ("qa_server_of", "edge_offload", "Is UE {ue}'s application served from the edge or the "
     "cloud?"),
    ("qa_concept", None, "CONCEPT:0"),
    ("qa_concept", None, "CONCEPT:1"),
    ("qa_concept", None, "CONCEPT:2"),
    ("qa_concept", None, "CONCEPT:3"),
]
# Concept questions (no scenario-specific content), hand-written, with their answers.
CONCEPTS = [
    ("In general, what does a larger A3 hysteresis do to ping-pong handovers: fewer or more?",
     "fewer"),
    ("In general, if you lengthen the time-to-trigger, do you get fewer or more handovers?",
     "fewer"),
    ("In general, does moving a latency-critical UE's server to the edge make its delay lower "
     "or higher?", "lower"),
    ("In general, does switching off a lightly loaded cell make the total power lower or "
     "higher?", "lower"),
]


def author(out: Path = SEED_DIR / "seed_tasks.jsonl") -> list[SeedTask]:
    model = CachedModel(load_model("auto"))
    writer = TaskWriter(model, lambda _: None, compose_rate=0.0, mistake_rate=0.0,
                        guided_rate=0.0)
    # Templates that name their fix ({fix}) need a threshold that fix reaches.
    guided = TaskWriter(model, lambda _: None, compose_rate=0.0, mistake_rate=0.0,
                        guided_rate=1.0)
    by_family: dict[str, list[int]] = {}
    for s in range(SEED_BASE, SEED_BASE + 600):
        by_family.setdefault(sample_scenario(s).family, []).append(s)
    used: dict[str, int] = {}
    tasks: list[SeedTask] = []
    seen: set[str] = set()
    rng = random.Random(2026)
    for group, items in (("a", [(p, f, d, t) for p, f, d, t in ACTION]),
                         ("q", [(p, f, "L1", t) for p, f, t in QA])):
        for pattern, fam, diff, text in items:
            made = 0
            # A sentence without placeholders is used once (the same text twice is a duplicate).
            per = PER_TEMPLATE if "{" in text or pattern.startswith("snap_") else 1
            families = [fam] if fam else sorted(by_family)
            k = 0
            while made < per and k < 200:
                f = families[(k + len(tasks)) % len(families)]
                k += 1
                seeds = by_family[f]
                i = used.get(f, 0)
                used[f] = i + 1
                seed = seeds[i % len(seeds)]
                # Handover tasks need the mobility corner with handovers on.
                ho = pattern == "handovers" or (fam == "mobility" and "{fix}" in text)
                scn = sample_scenario(seed, handover=ho)
                if text.startswith("CONCEPT:"):
                    q, a = CONCEPTS[int(text.split(":")[1])]
                    goal = {"answer": {"type": "string", "value": a}}
                    instr = q
                else:
                    w = guided if "{fix}" in text else writer
                    p = w.instantiate(pattern, scn, rng, text=text)
                    if p is None or ("{fix}" in text and w is guided and
                                     p.difficulty != "L1"):
                        continue
                    goal, instr = p.goal, p.instruction
                    if group == "q":
                        diff = p.difficulty  # a question's difficulty is its calls
                if instr in seen:
                    continue
                seen.add(instr)
                t = SeedTask(id=f"seed-{group}-{len(tasks):03d}", instruction=instr,
                             kind="action" if group == "a" else "qa", difficulty=diff,  # type: ignore[arg-type]
                             family=scn.family, pattern=pattern, scenario_seed=seed,
                             handover=ho,
                             scenario_id=scn.scenario_id, goal=goal)  # type: ignore[arg-type]
                assert not check(t), check(t)
                tasks.append(t)
                made += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(t.model_dump(mode="json", by_alias=True,
                                                   exclude_none=True), sort_keys=True) + "\n"
                           for t in tasks))
    return tasks


if __name__ == "__main__":
    ts = author()
    print(len(ts), "seed tasks;", sum(t.kind == "action" for t in ts), "action")
