"""The offline teacher's task writer: composes and instantiates task patterns on scenarios.

A pattern knows how to pick the entity a task is about (the most starved UE, the busiest cell,
the quietest cells...), how to put a goal threshold near the frontier of what one or two changes
can reach (it evaluates the planner's own candidate changes with the Experiment Model), and how
to say it: every instruction is assembled from independent phrase banks (situation, request,
constraint, closing) and carries the scenario's own numbers, so two tasks of one pattern rarely
share enough wording to be near-duplicates. With probability `compose_rate` an action goal is
composed with a second pattern's condition as a side constraint (`{"all": [...]}`).

At `mistake_rate` it writes realistic bad proposals - a scenario id that does not exist, a metric
the goal language does not know, a truncated JSON line - which validation must reject.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from forge.gym import handlers as H
from forge.gym import kpis as K
from forge.gym.env import CachedModel
from forge.gym.goals import UNCERTAIN_K, TaskGoal, band_edges, evaluate, lookup
from forge.gym.kpis import KpiView
from forge.scenario import BANDWIDTHS_RB, Scenario
from forge.teacher.policy import (
    AGG_METRICS,
    AGG_WORDS,
    LIST_MAX,
    MULTI_SYNONYMS,
    Planner,
    PolicyConfig,
    describe_change,
    heaviest,
)
from forge.teacher.prompts import SNAPSHOT_HEAD

Resolver = Callable[[str], Scenario | None]


@dataclass
class Proposal:
    instruction: str
    kind: str
    difficulty: str
    family: str
    scenario_id: str
    goal: dict[str, Any]
    pattern: str

    def to_json(self) -> str:
        return json.dumps({"instruction": self.instruction, "kind": self.kind,
                           "difficulty": self.difficulty, "family": self.family,
                           "scenario_id": self.scenario_id, "goal": self.goal,
                           "pattern": self.pattern}, sort_keys=True)


def _edge(v: KpiView, target: str, metric: str, toward: float) -> float | None:
    """The metric at the edge of the model's uncertainty band: the highest value the band
    admits if `toward` > 0, the lowest if < 0 (the mean when the prediction has no spread)."""
    vals = [lookup(v, target, metric), *band_edges(v, target, metric)]
    ok = [x for x in vals if x is not None]
    if len(ok) < len(vals):
        return None
    return max(ok) if toward > 0 else min(ok)


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


# --- phrase banks (hand-written) ------------------------------------------------------------------
OPEN = {
    "ue_throughput": [
        "UE {ue} reports {thr} Mbps against the {off} Mbps it asks for.",
        "A customer on UE {ue} opened a ticket: downloads crawl at about {thr} Mbps.",
        "Our drive test flags UE {ue}, served by cell {cell}, as badly under-served.",
        "UE {ue} sits at the edge of cell {cell} and only gets {thr} Mbps.",
        "Monitoring shows UE {ue} receiving a fraction of its offered {off} Mbps.",
        "The worst-served terminal in this {family} network is UE {ue}.",
        "Field report: UE {ue} (cell {cell}) cannot stream video.",
    ],
    "ue_delay": [
        "UE {ue} runs a latency-sensitive app and sees {delay} ms end to end.",
        "Gamers on UE {ue} complain about lag; the measured delay is {delay} ms.",
        "UE {ue}'s round trips are far too slow for its interactive traffic.",
        "Latency alarm on UE {ue}, which cell {cell} serves.",
        "The control loop on UE {ue} misses its deadlines because of network delay.",
        "UE {ue} is the slowest terminal in delay terms right now.",
    ],
    "cell_load": [
        "Cell {cell} is congested at PRB utilisation {prb}.",
        "Overload alarm: cell {cell} carries {n} UEs and has no spare resource blocks.",
        "The hotspot around cell {cell} saturates its scheduler.",
        "Cell {cell} runs hot while its neighbours idle.",
        "Capacity planning flagged cell {cell} as the bottleneck of this {family} site.",
        "Cell {cell} is the busiest in the network by a wide margin.",
    ],
    "energy": [
        "It is a quiet hour and the network draws {power} W.",
        "Operations asks for an energy saving on this {n_cells}-cell cluster.",
        "Night-time traffic is low; some of the {n_cells} cells may not be needed.",
        "Finance flagged the power bill of this site ({power} W right now).",
        "Green-network initiative: trim the consumption of this cluster.",
        "Several cells here carry almost nothing, yet all draw power.",
    ],
    "net_satisfaction": [
        "Some UEs get far less than they ask for; the worst is at satisfaction {sat}.",
        "The weakest UE in this {family} network receives only {sat} of its offered rate.",
        "Fairness complaint: a few terminals are starved while others are fine.",
        "Service assurance reports at least one badly starved UE.",
        "Customer care sees tickets from several under-served users here.",
    ],
    "slice_sla": [
        "The QCI {qci} slice has {viol} SLA violation(s).",
        "Tenant of slice QCI {qci} reports breached SLAs.",
        "Slice monitoring: QCI {qci} misses its guarantees for some UEs.",
        "An enterprise customer on QCI {qci} escalated SLA breaches.",
    ],
    "handovers": [
        "Mobile UEs ping-pong between cells: {ho} handovers in the last window.",
        "Handover statistics look noisy in this mobility cluster.",
        "Too many handovers: the cluster logged {ho} in one measurement period.",
        "Walking users bounce between neighbouring cells.",
    ],
}
ASK = {
    "ue_throughput": ["Raise its downlink throughput to at least {t} Mbps.",
                      "Get UE {ue} to {t} Mbps or more.",
                      "Bring its downlink rate up to {t} Mbps at least.",
                      "Fix it so that UE {ue} receives no less than {t} Mbps.",
                      "Make sure UE {ue} ends up with at least {t} Mbps downlink."],
    "ue_delay": ["Bring its delay down to {t} ms or less.",
                 "Get UE {ue}'s end-to-end delay under {t} ms.",
                 "Cut the delay of UE {ue} to at most {t} ms.",
                 "Move it so that the delay does not exceed {t} ms."],
    "cell_load": ["Bring its PRB utilisation down to {t} or below.",
                  "Relieve cell {cell} to a utilisation of at most {t}.",
                  "Offload it until its PRB utilisation is no higher than {t}.",
                  "Get cell {cell} below {t} PRB utilisation."],
    "energy": ["Cut the total power to at most {t} W.",
               "Reduce the consumption to {t} W or less.",
               "Save energy: total draw must not exceed {t} W.",
               "Switch off what is not needed so that the network draws at most {t} W."],
    "net_satisfaction": ["Lift the worst-UE satisfaction to at least {t}.",
                         "Make every UE get at least {t} of its offered rate.",
                         "Raise the minimum satisfaction across UEs to {t} or more."],
    "slice_sla": ["Reduce the slice's SLA violations to fewer than {t:g}.",
                  "Bring the QCI {qci} violations below {t:g}."],
    "handovers": ["Reduce the handover count below {t:g}.",
                  "Calm the handovers down to fewer than {t:g}.",
                  "Tune the handover settings so that fewer than {t:g} handovers occur."],
}
CONSTRAINT = {
    "min_sat": ["Keep every UE above {f} satisfaction.", "No UE may fall below {f} of its "
                "offered rate.", "Do not starve anyone: minimum satisfaction stays at {f} or "
                "more."],
    "power": ["Do not let the total power exceed {p} W.", "Stay within a power budget of "
              "{p} W.", "The site must not draw more than {p} W."],
    "carried": ["Keep at least {c} Mbps delivered network-wide.", "The network must still "
                "carry {c} Mbps or more downlink.", "Total downlink throughput may not drop "
                "below {c} Mbps."],
    "prb": ["No cell may end up above {m} PRB utilisation.", "Keep the highest PRB "
            "utilisation at {m} or below."],
}
CLOSE = ["", "", "Check the effect before and after.", "Use what-if predictions before changing "
         "anything.", "Explain what you changed.", "Prefer the smallest change that works.",
         "Report the before and after values.", "Roll back anything that does not help."]

# Framing around the core sentence. QA framing must not contain words the planner reads as
# question cues (busiest, worst, delay, power, load, sla, serving, throughput, ...).
PERSONA = ["", "", "", "Quick question from the NOC:", "The shift lead wants to know:",
           "Regional operations asks:", "From the on-call engineer:", "Ticket follow-up:",
           "A planner preparing next quarter asks:", "Sanity check before a change:",
           "For the weekly report:", "A field engineer on site asks:",
           "Before the maintenance window:", "Customer care needs this for a ticket:",
           "For the capacity review:", "During the morning check:", "Audit request:"]
ACTION_PERSONA = ["", "", "", "", "", "", "Ticket from the NOC:", "Change request from regional "
                  "operations:", "On-call escalation:", "From the shift lead:", "Work order:",
                  "Request from the energy team:", "From the customer-care desk:",
                  "Priority 2 incident:", "Planned optimisation:",
                  "From the RAN optimisation team:", "Night-shift task:", "Action item from "
                  "the morning meeting:", "Follow-up on yesterday's alarm:"]
CONTEXT = ["", "", "This {family} deployment has {n_cells} cells and {n_ues} UEs.",
           "Site facts: {n_cells} eNBs, {n_ues} attached UEs, {isd} m apart.",
           "For context, the area is covered by {n_cells} cells ({family} pattern).",
           "We run {n_ues} UEs over a {layout} layout of {n_cells} cells.",
           "The cluster ({layout} layout, {isd} m between sites) has {n_ues} UEs attached.",
           "We are looking at a {n_cells}-cell {family} site.",
           "{n_ues} UEs are attached across {n_cells} cells here.",
           "The network under study is a {family} scenario with {isd} m inter-site distance.",
           "Scenario: {family}, {n_cells} cells on a {layout} grid."]
WHY = ["", "", "", "The customer holds a premium contract.", "This has been escalated twice.",
       "Keep the change footprint small.", "We need this fixed before the evening peak.",
       "Management follows this one closely.", "Document your reasoning as you go.",
       "Other teams are not to be disturbed by side effects.", "Think like a careful operator."]
FORMAT = ["", "", "Give just the value.", "A single value is enough.", "Keep the answer short.",
          "Explain briefly how you found it.", "Say which tool output you relied on.",
          "One sentence of explanation, then the answer.", "No changes to the network, please.",
          "Read-only access: do not reconfigure anything.", "Quote the figure you observed."]
# Word-level paraphrases of action instructions (their goal is machine-readable, so wording is
# free). Questions are varied only in the phrases the planner maps back (`MULTI_SYNONYMS`).
SYNONYMS: dict[str, list[str]] = {
    "Raise": ["Increase", "Lift", "Boost", "Push up"], "raise": ["increase", "lift", "boost"],
    "Bring": ["Get", "Drive", "Take"], "Reduce": ["Lower", "Cut", "Decrease", "Trim"],
    "at least": ["no less than", "a minimum of", "at minimum"],
    "at most": ["no more than", "a maximum of", "not above"],
    "complains": ["is unhappy", "keeps complaining", "raised a complaint"],
    "congested": ["overloaded", "saturated", "jammed"], "network": ["network", "RAN", "cluster"],
    "Make sure": ["Ensure", "Guarantee", "See to it"], "Fix it": ["Sort it out", "Resolve it"],
    "slow": ["sluggish", "poor", "weak"], "too": ["far too", "much too", "way too"],
    "Check": ["Verify", "Confirm", "Inspect"], "change": ["modification", "change", "tweak"],
    "the goal": ["the target", "the objective"], "right now": ["at the moment", "currently"],
    "UE": ["UE", "terminal", "user equipment"], "operator": ["operator", "NOC engineer"],
}
_SWAP_RE: dict[tuple[tuple[str, ...], bool], re.Pattern[str]] = {}


def swap_phrases(text: str, rng: random.Random, table: Mapping[str, Sequence[str]],
                 rate: float = 0.5, ignore_case: bool = False) -> str:
    """Replace each phrase of `table` found in `text` by one of its alternatives, at `rate`.
    With `ignore_case` the table's keys are lower case, a phrase is found in any case and a
    capital at its start stays."""
    key = (tuple(table), ignore_case)
    rx = _SWAP_RE.get(key)
    if rx is None:
        keys = sorted(table, key=len, reverse=True)
        rx = _SWAP_RE[key] = re.compile(
            r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b",
            re.IGNORECASE if ignore_case else 0)

    def sub(m: re.Match[str]) -> str:
        if rng.random() >= rate:
            return m.group(1)
        v = rng.choice(table[m.group(1).lower() if ignore_case else m.group(1)])
        return v[0].upper() + v[1:] if ignore_case and m.group(1)[0].isupper() else v

    return rx.sub(sub, text)


def paraphrase(text: str, rng: random.Random, rate: float = 0.5) -> str:
    """Replace some phrases of an action instruction with synonyms (UE ids stay attached:
    'terminal 4' is still UE 4 for a reader, and the goal JSON is what the planner and the
    verifier use)."""
    return swap_phrases(text, rng, SYNONYMS, rate)


def vary_multi(text: str, rng: random.Random, rate: float = 0.5) -> str:
    """Swap the phrases a multi-step question is read by for other wordings of them
    (`MULTI_SYNONYMS`, which the planner maps back)."""
    return swap_phrases(text, rng, MULTI_SYNONYMS, rate, ignore_case=True)


QA_TEXT = {
    # The busiest cell's load, not its index: well defined even when several cells tie at full
    # utilisation (qa_busiest needs a clear winner and is rejected in most congested networks).
    "qa_busiest_load": ["What is the PRB utilisation of the busiest cell right now?",
                        "Report the PRB utilisation of the most loaded cell in this {family} "
                        "network.",
                        "At what PRB utilisation does the busiest cell run at the moment?",
                        "Give the PRB utilisation of the busiest cell, as a fraction of 1.",
                        "Of the {n_cells} cells, how loaded is the busiest? Give the PRB "
                        "utilisation of the busiest cell."],
    "qa_busiest": ["Which cell has the highest PRB utilisation right now? Give the cell index.",
                   "Name the busiest cell of this {family} network.",
                   "Operations wants to know which cell is the most loaded at the moment.",
                   "Find the busiest cell by PRB utilisation and report its index.",
                   "Which cell should capacity planning look at first (highest PRB load)?",
                   "Of the {n_cells} cells, which one is the most loaded?",
                   "Tell me which cell runs at the highest PRB utilisation."],
    "qa_worst_ue": ["Which UE is the worst served (lowest satisfaction)? Give the UE index.",
                    "Identify the most starved UE in the network.",
                    "Which terminal gets the smallest share of its offered rate?",
                    "Find the worst UE by satisfaction and report its index.",
                    "Who is the worst served subscriber here, by delivered/offered ratio?"],
    "qa_ue_thr": ["What downlink throughput (Mbps) does UE {ue} currently get?",
                  "How many Mbps is UE {ue} receiving on the downlink?",
                  "Report UE {ue}'s current downlink throughput in Mbps.",
                  "A customer on UE {ue} asks about their download speed: what is it in Mbps?",
                  "Give the downlink rate that UE {ue} achieves at the moment.",
                  "What rate does UE {ue} download at right now?",
                  "Look up UE {ue}: how much downlink throughput does it get?"],
    "qa_ue_delay": ["What is UE {ue}'s end-to-end delay in ms?",
                    "How much latency does UE {ue} see right now (ms)?",
                    "Report the current delay of UE {ue}.",
                    "What end-to-end latency does UE {ue} experience at the moment?",
                    "Give UE {ue}'s packet delay in milliseconds.",
                    "How long do UE {ue}'s packets take end to end (ms)?"],
    "qa_ue_sla": ["Is UE {ue}'s SLA met right now? Answer yes or no.",
                  "Does UE {ue} currently meet its SLA (yes/no)?",
                  "Check whether UE {ue} is within its SLA; answer yes or no.",
                  "Is UE {ue} inside its service level agreement at the moment (yes or no)?",
                  "Yes or no: does UE {ue} meet its SLA?"],
    "qa_ue_serving": ["Which cell is serving UE {ue}?", "UE {ue} is attached to which cell?",
                      "Report the serving cell of UE {ue}.",
                      "Which cell does UE {ue} camp on right now?",
                      "Tell me the index of the cell that serves UE {ue}.",
                      "Which eNB cell is UE {ue} attached to?"],
    "qa_ue_sinr": ["What SINR (dB) does UE {ue} see?", "Report UE {ue}'s downlink SINR in dB.",
                   "How good is UE {ue}'s signal-to-interference ratio right now (dB)?",
                   "Give the SINR of UE {ue}."],
    "qa_ue_rsrp": ["What RSRP does UE {ue} measure from its serving cell (dBm)?",
                   "Report UE {ue}'s reference signal received power in dBm.",
                   "How strong is the serving cell's signal at UE {ue} (RSRP, dBm)?"],
    "qa_ue_loss": ["What fraction of UE {ue}'s downlink packets is lost?",
                   "Report UE {ue}'s downlink packet loss ratio (0-1).",
                   "How much packet loss does UE {ue} suffer on the downlink (ratio)?"],
    "qa_ue_sat": ["What share of its offered rate does UE {ue} actually get (satisfaction, 0-1)?",
                  "Report UE {ue}'s satisfaction, delivered over offered downlink rate.",
                  "How satisfied is UE {ue}: delivered divided by offered rate?"],
    "qa_ue_ul": ["What uplink throughput (Mbps) does UE {ue} get?",
                 "Report UE {ue}'s current uplink rate in Mbps.",
                 "How many Mbps does UE {ue} send on the uplink?"],
    "qa_cell_nues": ["How many UEs does cell {cell} serve?",
                     "Count the UEs attached to cell {cell}.",
                     "How many UEs are on cell {cell} right now?",
                     "Give the number of UEs that cell {cell} carries.",
                     "How many terminals does cell {cell} serve at the moment?"],
    "qa_cell_prb": ["What is the PRB utilisation of cell {cell}?",
                    "How loaded is cell {cell} (PRB utilisation, 0-1)?",
                    "Report cell {cell}'s current PRB load.",
                    "What fraction of its resource blocks does cell {cell} use?",
                    "Give the PRB utilisation of cell {cell} as a number between 0 and 1."],
    "qa_cell_thr": ["How much downlink traffic (Mbps) does cell {cell} deliver?",
                    "Report cell {cell}'s total downlink throughput in Mbps.",
                    "What downlink throughput does cell {cell} carry right now?"],
    "qa_cell_delay": ["What is the mean delay (ms) of the UEs served by cell {cell}?",
                      "Report the average end-to-end delay in cell {cell}.",
                      "How much latency do cell {cell}'s users see on average (ms)?"],
    "qa_cell_txp": ["What transmit power (dBm) is cell {cell} configured with?",
                    "Report cell {cell}'s configured Tx power in dBm.",
                    "At what transmit power does cell {cell} radiate (dBm)?"],
    "qa_cell_bw": ["How many resource blocks of bandwidth does cell {cell} have?",
                   "Report cell {cell}'s configured bandwidth in RBs.",
                   "What is the channel bandwidth of cell {cell}, in resource blocks?"],
    "qa_cell_sched": ["Which MAC scheduler does cell {cell} run?",
                      "Report the scheduler configured on cell {cell}.",
                      "What scheduling algorithm is cell {cell} using?"],
    "qa_power": ["How much power (W) does the network draw in total?",
                 "What is the total energy draw of this {n_cells}-cell network in W?",
                 "Report the site's total power consumption.",
                 "What is the combined power consumption of all cells, in watts?",
                 "How many watts does the whole cluster consume right now?"],
    "qa_net_thr": ["What total downlink throughput (Mbps) does the network deliver?",
                   "Report the network-wide downlink throughput in Mbps.",
                   "How much downlink traffic does the whole {n_cells}-cell network carry?"],
    "qa_net_delay": ["What is the mean end-to-end delay across all UEs (ms)?",
                     "Report the network's average UE delay in ms.",
                     "On average, how much latency do UEs see in this network (ms)?"],
    "qa_net_active": ["How many cells are switched on right now?",
                      "Report the number of active cells in the network.",
                      "Of the {n_cells} cells, how many are active?"],
    # Read from the slice's SLA status (its mean delay and its QCI's delay budget): SLA
    # violation counts are no longer placed (the loss band makes them uncertain), and these
    # keep get_slice_sla_status in the data with answers that measurement noise cannot flip.
    "qa_slice_delay": ["What is the mean end-to-end delay of the QCI {qci} slice's UEs (ms)?",
                       "Report the average delay of the UEs in slice QCI {qci}, in ms.",
                       "How much delay do the QCI {qci} subscribers see on average (ms)?",
                       "On average, what latency does the QCI {qci} slice get (ms)?"],
    "qa_slice_budget": ["What packet delay budget applies to the QCI {qci} slice (ms)?",
                        "Report the delay budget of slice QCI {qci} in ms.",
                        "Within how many ms must the packets of the QCI {qci} slice arrive, "
                        "by its delay budget?"],
    "qa_qci_nues": ["How many UEs belong to the QCI {qci} slice?",
                    "Count the UEs of slice QCI {qci}.",
                    "How many terminals are in the QCI {qci} slice?"],
    "qa_sla_count": ["How many SLA violations are there across the network?",
                     "Count the UEs whose SLA is violated right now.",
                     "How many SLA breaches does the network have at the moment?"],
    "qa_cell_sinr": ["What is the mean SINR (dB) of the UEs served by cell {cell}?",
                     "On average, what SINR do cell {cell}'s UEs see (dB)?",
                     "Report the mean downlink SINR over the UEs of cell {cell}, in dB.",
                     "How good is the radio quality in cell {cell}: its UEs' mean SINR in dB?"],
    "qa_cell_ho": ["How many handovers did the UEs served by cell {cell} make?",
                   "Report the handover count of cell {cell}.",
                   "What handover count does cell {cell} show for its UEs?",
                   "How many handovers are logged for cell {cell}?"],
    "qa_net_ho": ["How many handovers happened across the whole network?",
                  "Report the network-wide handover count.",
                  "What is the total handover count of this {n_cells}-cell network?"],
    "qa_neighbor": ["Which neighbour of cell {cell} is the closest? Give its index.",
                    "Of the neighbour cells of cell {cell}, which one is nearest?",
                    "Which neighbour cell overlaps most with cell {cell} (most of its UEs "
                    "within 6 dB)?",
                    "Which neighbour of cell {cell} do the most of its UEs hear within 6 dB?"],
    "qa_multi_hop": ["In the busiest cell, which UE has the lowest downlink throughput?",
                     "Find the busiest cell, then its worst UE by throughput: which UE is it?",
                     "Which UE of the busiest cell gets the lowest throughput?",
                     "Take the most loaded cell: which of its UEs has the smallest downlink "
                     "rate?"],
}
# Why the question is asked: free text around the question (QA framing, like WHY for actions).
REASON = ["", "", "", "", "A customer called about slow video.", "We are about to retune this "
          "area.", "The dashboard went blank and we need the figure by hand.",
          "This goes into the incident report.", "The vendor asked for it during a call.",
          "A complaint ticket mentions this.", "Planning needs a baseline before any change.",
          "It is for the monthly KPI review.", "The night shift noticed something odd.",
          "An alarm fired in this area an hour ago.", "We are checking a drive-test result.",
          "The regulator requested a spot check.", "Management asked on short notice.",
          "Compare it later with the post-change value.", "The field team is standing by.",
          "Double-checking before we escalate."]
SNAP_TEXT = {
    "snap_busiest": ["Using only the snapshot below, which cell is the busiest?",
                     "From the KPIs below, name the most loaded cell.",
                     "Look at the snapshot: which cell has the highest PRB utilisation?"],
    "snap_lowest": ["From the snapshot below, which UE has the lowest downlink throughput?",
                    "Using the KPIs below only, which UE gets the worst throughput?",
                    "Read the snapshot: which UE has the lowest downlink rate?"],
    "snap_count": ["From the snapshot below, how many UEs does cell {cell} serve?",
                   "Using the KPIs below only, count the UEs attached to cell {cell}."],
}
CONCEPT_TEXT = [
    ("In general, what does a larger A3 hysteresis do to the number of handovers? Answer "
     "fewer or more.", "fewer"),
    ("In general, does a longer time-to-trigger give fewer or more handovers?", "fewer"),
    ("In general, does switching a lightly loaded cell off make total power lower or higher?",
     "lower"),
    ("In general, does moving a UE's application server to the edge make its delay lower or "
     "higher?", "lower"),
    ("In general, does widening a cell's bandwidth make its capacity lower or higher?",
     "higher"),
    ("In general, which scheduler would you pick to honour GBR bearers: pf, rr or pss?",
     "pss"),
]
# Read-a-value questions: pattern -> (metric, tolerance). Tolerances cover the gym's measurement
# noise (2 % on rates and delays, 0.5 dB on RSRP/SINR) with room to spare.
_UE_REF: dict[str, tuple[str, dict[str, float]]] = {
    "qa_ue_sinr": ("sinr_db", {"tol_abs": 1.5}),
    "qa_ue_rsrp": ("rsrp_dbm", {"tol_abs": 1.5}),
    "qa_ue_loss": ("loss_ratio", {"tol_abs": 0.01}),
    "qa_ue_sat": ("dl_satisfaction", {"tol_abs": 0.02, "tol_rel": 0.08}),
    "qa_ue_ul": ("ul_throughput_mbps", {"tol_abs": 0.01, "tol_rel": 0.08}),
}
_CELL_REF: dict[str, tuple[str, str, dict[str, float]]] = {
    "qa_cell_thr": ("dl_throughput_mbps", "number", {"tol_abs": 0.01, "tol_rel": 0.08}),
    "qa_cell_delay": ("mean_delay_ms", "number", {"tol_abs": 0.5, "tol_rel": 0.08}),
    "qa_cell_txp": ("tx_power_dbm", "number", {"tol_abs": 0.01}),
    "qa_cell_bw": ("bandwidth_rbs", "integer", {}),
}
# Multi-step questions (see `TaskWriter._qa_multi`). Every sentence is a question (a question
# mark), so the planner reads it and not the framing; the key phrases are the ones the planner's
# regexes (forge.teacher.policy AGG_CELL_RE ...) look for.
MULTI_TEXT = {
    "qa_cell_agg": [
        "Across the active cells, which cell's UEs have the {hl} {agg} {ml}? Give the index.",
        "Comparing cell by cell, which cell's UEs see the {hl} {agg} {ml}?",
        "Which cell's UEs get the {hl} {agg} {ml} in this network?",
        "Per cell, over the UEs it serves: which cell's UEs have the {hl} {agg} {ml}?",
        "Looking at each cell's own UEs, which cell's UEs see the {hl} {agg} {ml}?",
        "Rank the cells by what their own UEs get: which cell's UEs get the {hl} {agg} {ml}?",
        "Over the cells that carry traffic, which cell's UEs have the {hl} {agg} {ml}? Answer "
        "with the cell index.",
        "Cell by cell, over its attached UEs only: which cell's UEs see the {hl} {agg} {ml}?"],
    "qa_cell_pct": [
        "Which cell has the {hl} {p}th-percentile UE {ml}?",
        "Comparing the cells, which cell has the {hl} {p}th percentile {ml} among its UEs?",
        "Over the UEs of each cell, which cell has the {hl} {p}th-percentile {ml}?",
        "Which cell has the {hl} {p}th percentile UE {ml}? Report its index.",
        "Take each cell's UEs on their own: which cell has the {hl} {p}th percentile {ml}?",
        "Comparing percentiles cell by cell, which cell has the {hl} {p}th-percentile {ml}?",
        "Among the cells that serve UEs, which cell has the {hl} {p}th percentile UE {ml}? The "
        "index is enough."],
    "qa_cell_gap": [
        "Which cell has the largest gap between the mean and the {agg} {ml} of its UEs?",
        "Find the cell with the largest gap between the mean and the {agg} {ml} of the UEs it "
        "serves: which one is it?",
        "Where is service least even: which cell shows the largest gap between the mean and "
        "the {agg} {ml} over its UEs?",
        "Which cell's UEs are the most uneven, i.e. which cell has the largest gap between the "
        "mean and the {agg} {ml}?",
        "Which cell treats its UEs least evenly, that is, has the largest gap between the mean "
        "and the {agg} {ml} of its UEs?",
        "Which cell's UEs are spread the most, by the largest gap between the mean and the {agg} "
        "{ml}?",
        "Looking for unfair cells: which one shows the largest gap between the mean and the "
        "{agg} {ml} over its own UEs?",
        "Per cell, how far does the {agg} sit from the mean? Which cell has the largest gap "
        "between the mean and the {agg} {ml}?"],
    "qa_cell_spread": [
        "Which cell has the largest spread between its {p1}th and {p2}th percentile UE {ml}?",
        "Which cell shows the largest spread between the {p1}th and the {p2}th percentile "
        "{ml} of its UEs?",
        "Find the least uniform cell: which has the largest spread between its {p1}th and "
        "{p2}th-percentile {ml}?",
        "Which cell's UEs differ the most, judged by the largest spread between the {p1}th and "
        "{p2}th percentile {ml}?",
        "Where is the {ml} least uniform: which cell has the largest spread between its {p1}th "
        "and {p2}th percentile UE {ml}?",
        "Comparing percentiles per cell, which cell shows the largest spread between the {p1}th "
        "and the {p2}th percentile {ml}? Give the index."],
    "qa_slice_agg": [
        "Which slice (QCI) has the {hl} {agg} {ml}?",
        "Across the slices, which slice has the {hl} {agg} {ml}? Give the QCI.",
        "Comparing the slices by their UEs, which slice has the {hl} {agg} {ml}?",
        "Grouping the UEs by QCI, which slice has the {hl} {agg} {ml}?",
        "Per QoS class, which slice (QCI) has the {hl} {agg} {ml}?",
        "Which slice has the {hl} {agg} {ml} among its UEs? Answer with the QCI."],
    "qa_whatif_busy": [
        "If cell {c} were switched off, which cell would be the most loaded according to the "
        "model's prediction?",
        "Before we act: if cell {c} were switched off, which cell would carry the highest PRB "
        "utilisation, as predicted?",
        "If cell {c} were widened to {rbs} RBs, which cell would be the busiest by predicted "
        "PRB utilisation?",
        "Planning check: if cell {c} were widened to {rbs} resource blocks, which cell would "
        "the model expect to be the most loaded?"],
    "qa_capacity": [
        "What downlink capacity (Mbps) would cell {c} have with {rbs} RBs, by the closed-form "
        "estimate?",
        "By the closed-form estimate, what capacity would cell {c} offer its current UEs at "
        "{rbs} RBs (Mbps)?",
        "How much downlink capacity would cell {c} reach with {rbs} resource blocks (Mbps)?"],
    "qa_cqi_of": [
        "Which CQI does an LTE UE report at an SINR of {x} dB?",
        "What CQI corresponds to an SINR of {x} dB?",
        "Which channel quality indicator (CQI) goes with an SINR of {x} dB?"],
    "qa_cqi_gain": [
        "If UE {ue}'s SINR rose by {d} dB, which CQI would it report?",
        "Which CQI would UE {ue} report if its SINR improved by {d} dB?",
        "Suppose UE {ue}'s SINR went up by {d} dB: what CQI would it then report?"],
    "qa_list_max": [
        "Which cell {what}?", "Looking at the cell list, which cell {what}?",
        "Of the {n_cells} cells, which cell {what}? Give its index."],
    "qa_heavy_ue": [
        "Which UE of cell {c} asks for the most downlink traffic?",
        "Which terminal on cell {c} requests the most downlink traffic?",
        "On the cell list of UEs: which UE on cell {c} offers the most downlink load?"],
    "qa_server_of": [
        "Is UE {ue}'s application served from the edge or the cloud?",
        "Does UE {ue} reach its server at the edge or in the cloud? Answer edge or cloud.",
        "Where does UE {ue}'s application run: edge or cloud?"],
}
MULTI_PATTERNS = ("qa_cell_agg", "qa_cell_pct", "qa_cell_gap", "qa_cell_spread", "qa_slice_agg",
                  "qa_whatif_busy", "qa_capacity", "qa_cqi_of", "qa_cqi_gain", "qa_list_max",
                  "qa_heavy_ue", "qa_server_of")
# Which question patterns can come out at which difficulty (by the calls their answer takes).
QA_TIERS: dict[str, tuple[str, ...]] = {
    "L2": ("qa_cell_agg", "qa_cell_pct", "qa_cell_gap", "qa_cell_spread", "qa_slice_agg"),
    "L3": ("qa_cell_gap", "qa_cell_spread", "qa_cell_agg", "qa_cell_pct"),
}
# The tier mix asked of qa proposals (L1/L2/L3). L2/L3 questions verify a little less often
# than one-call ones, so they are asked for slightly above the 30/45/25 target.
QA_TIER_WEIGHTS = (0.23, 0.47, 0.30)
# Of the L1 questions, the share drawn from the one-call patterns added with the tools they
# cover (CQI, capacity, scheduler and server counts, what-if); the rest from the classic ones.
NEW_L1_SHARE = 0.37
# Of the L1 questions, the share drawn from the patterns that teach tools the other patterns
# rarely reach (ranking, SLA checks, per-cell radio quality, handover counts, neighbour lists):
# drawn only from the whole L1 list, each came out in under 1 % of verified samples.
# (0.33 until the slice questions joined them, session 8.)
TOOL_L1_SHARE = 0.36
TOOL_L1 = ("qa_busiest", "qa_busiest_load", "qa_ue_sla", "qa_cell_sinr", "qa_cell_ho",
           "qa_neighbor", "qa_slice_delay", "qa_slice_budget")
NEW_L1 = ("qa_whatif_busy", "qa_capacity", "qa_cqi_of", "qa_cqi_gain", "qa_list_max",
          "qa_heavy_ue", "qa_server_of")
# How often a guided ticket names each fix (relative weights among the changes that reach the
# goal): the planner's search mostly finds bandwidth and power changes, so the named fixes lean
# towards the other tools, which a model must also learn to apply.
# set_ue_qci went from 6 to 12 when the loss band made slice SLA tickets rare (they had made
# most of its uses); that alone did not bring it back above 1 % of samples, the qci_move work
# orders did.
FIX_WEIGHT = {"set_bandwidth": 1.0, "set_tx_power": 1.0, "force_handover": 1.5,
              "set_ue_server": 1.5, "graceful_degradation": 1.5, "set_cell_state": 1.0,
              "set_scheduler": 9.0, "set_handover_params": 3.0, "set_handover_algorithm": 3.0,
              "set_ue_qci": 12.0, "shape_traffic": 4.0}


def tier_of(calls: int) -> str:
    return "L1" if calls <= 3 else "L2" if calls <= 7 else "L3"


def _agg(xs: list[float], agg: str) -> float:
    return {"mean": sum(xs) / len(xs), "sum": sum(xs), "min": min(xs), "max": max(xs)}[agg]


def _clear_winner(score: dict[int, float], hl: str, metric: str, scale: list[float]
                  ) -> int | None:
    """The extreme entity when it stands out by a margin that measurement noise (2 % on rates
    and delays, 0.5 dB on radio metrics) cannot close; else None."""
    order = sorted(score, key=lambda k: score[k], reverse=hl in ("highest", "largest"))
    gap = abs(score[order[0]] - score[order[1]])
    if metric in ("sinr_db", "rsrp_dbm"):
        return order[0] if gap >= 1.5 else None
    ref = max(max(abs(x) for x in scale), 1e-6)
    return order[0] if gap >= 0.1 * ref else None


_GOAL = TypeAdapter(TaskGoal)


def certainly_unmet(goal: dict[str, Any], v: KpiView) -> bool:
    """Whether the goal fails on the view and its uncertainty band cannot overturn that."""
    r = evaluate(_GOAL.validate_python(goal), v)
    return not r.holds and r.certain


class _ScenarioOnly:
    """What the closed-form capacity handler reads of an env: its scenario."""

    def __init__(self, scn: Scenario) -> None:
        self.scenario = scn


# Patterns whose tasks may name the change to make (see `_action`), and how they say it.
GUIDED_PATTERNS = ("ue_throughput", "ue_delay", "cell_load", "net_satisfaction", "slice_sla",
                   "handovers")
GUIDE = ["The diagnosis is done: fix it by {c}.", "Engineering suggests {c}; do that.",
         "Apply the agreed fix, {c}.", "The approved change is {c}.",
         "Planning already decided on {c}: apply it."]
# Try-then-roll-back tickets: a change to try first (one the model predicts does not help),
# and the fallback to apply after rolling it back. Share of guided tickets written this way.
TRIAL = ["Engineering wants {a} tried first; if that does not reach the target, roll it back "
         "and apply {c} instead.", "First try {a}. Should it fall short, undo it and go with "
         "{c}.", "The runbook says: try {a}; if the target is still missed, roll it back and "
         "fall back to {c}."]
# 0.25 moved too many guided tickets from L1 to L2 (action mix measured 24.8/51.0/24.2 at
# 3 x 512); at 0.15 the action mix stays within 5 points of 30/45/25.
TRIAL_RATE = 0.15
ACTION_PATTERNS = ("ue_throughput", "ue_delay", "cell_load", "energy", "net_satisfaction",
                   "slice_sla", "handovers", "ho_maint", "qci_move")
# Maintenance tickets on a cell's handover settings: the goal is the setting itself (certain
# under any model), half of them with a service guard. The model predicts little effect of
# these settings in short windows, so no KPI goal can name them as the fix (issue 12 found the
# handover tools in 0.1-0.2 % of samples); an operator still has to apply such work orders.
HO_MAINT = ["The mobility team asks for {c}.", "Work order for cell {cell}: {c}.",
            "Drive-test findings call for {c}; carry it out.",
            "The approved change is {c}. Confirm the new setting afterwards.",
            "Planning already decided on {c}: apply it.",
            "Ahead of the night's mobility trial, apply {c} and check the setting took."]
# Plan changes: a UE's bearer remapped to another QCI, the goal being its QCI (certain under
# any model), some with a service guard. set_ue_qci had come mostly from slice SLA tickets,
# which the loss band made rare (0.7-0.9 % of samples instead of 1.8 %).
QCI_MOVE = ["Customer care asks for {c}: the subscriber changed plans.",
            "Work order for UE {ue}: {c}.",
            "UE {ue}'s contract now puts it in QCI {new}; finish the plan change by {c}.",
            "Provisioning ticket (the subscriber was on QCI {old}): {c}.",
            "The approved change is {c}. Confirm the new bearer afterwards."]
# Patterns drawn less often than the others (the chance a draw is kept): work orders always fit
# a scenario while most patterns often do not, so unthinned they took 8 % of verified samples.
# The two slice questions share one slot of the tool-teaching L1 patterns: at a full slot each,
# the others' share fell by a quarter and rank_busiest_cells to 0.99 % of a 58k pool.
PATTERN_RATE = {"ho_maint": 0.45, "qci_move": 0.2, "qa_slice_delay": 0.5, "qa_slice_budget": 0.5}
HO_HYSTERESIS = tuple(x / 2 for x in range(0, 13))   # 0-6 dB in 0.5 dB steps (the ns-3 grid's)
# qa_sla_count stays a seed pattern but is not proposed: near a budget, measurement noise flips
# SLA verdicts, so half of its answers disagree with the noiseless check.
# `handovers` stays a pattern (seed tasks, other physics) but is not proposed: the shipped
# Experiment Model predicts almost no handovers (well under one per window in every scenario of
# the pool), so no count threshold can be placed. Handover settings are taught as fixes of
# moving UEs' rate and delay instead.
PROPOSED_ACTION = tuple(p for p in ACTION_PATTERNS if p != "handovers")
QA_PATTERNS = tuple(p for p in QA_TEXT if p != "qa_sla_count") + tuple(SNAP_TEXT) + (
    "qa_concept",) + MULTI_PATTERNS
QA_L1 = tuple(p for p in QA_PATTERNS if p not in QA_TIERS["L2"])
PATTERNS = ACTION_PATTERNS + QA_PATTERNS


class TaskWriter:
    def __init__(self, model: CachedModel, resolver: Resolver, compose_rate: float = 0.3,
                 mistake_rate: float = 0.05, guided_rate: float = 0.45,
                 l1_even_share: float = 0.0) -> None:
        if not 0.0 <= l1_even_share <= 1.0:
            raise ValueError(f"l1_even_share must be in [0, 1], got {l1_even_share}")
        self.model = model
        self.l1_even_share = l1_even_share
        self.resolver = resolver
        self.compose_rate = compose_rate
        self.mistake_rate = mistake_rate
        self.guided_rate = guided_rate
        self._last_kw: dict[str, Any] = {}
        self._last_snapshot = ""
        self._trial: dict[str, Any] | None = None

    # -- entry point ------------------------------------------------------------------------
    def write(self, examples: list[dict[str, Any]], scenarios: list[dict[str, Any]], n: int,
              rng: random.Random, n_action: int | None = None) -> str:
        """n JSON lines of new tasks: patterns drawn from the examples (mostly) and scenarios
        from the offered list; `n_action` of them action tasks when the prompt asks for a mix
        (else the kinds follow the examples)."""
        pats = [e.get("pattern") for e in examples if e.get("pattern") in PATTERNS]
        if n_action is None:
            wanted: list[tuple[str, ...]] = [PATTERNS] * n
        else:
            n_action = max(0, min(n_action, n))
            wanted = [PROPOSED_ACTION] * n_action + [QA_PATTERNS] * (n - n_action)
            rng.shuffle(wanted)
        lines: list[str] = []
        for allowed in wanted:
            if not scenarios:
                break
            if rng.random() < self.mistake_rate:
                lines.append(self._bad(rng, scenarios))
                continue
            tier = None
            if allowed is QA_PATTERNS:
                # A question's difficulty is the number of calls its answer takes: choose the
                # tier first (the training set wants 30/45/25), then a pattern that can give it.
                tier = rng.choices(("L1", "L2", "L3"), weights=QA_TIER_WEIGHTS)[0]
                if tier == "L1":
                    x = rng.random()
                    allowed = NEW_L1 if x < NEW_L1_SHARE else TOOL_L1 if \
                        x < NEW_L1_SHARE + TOOL_L1_SHARE else QA_L1
                    # The even share: one pattern drawn uniformly from every L1 question
                    # pattern and kept through the retries (only the scenario changes), so a
                    # pattern that rarely fits a scenario still gets its share. (No draw at 0:
                    # the default stream, and so earlier runs' tasks, stay as they were.)
                    if self.l1_even_share and rng.random() < self.l1_even_share:
                        allowed = (rng.choice(QA_L1),)
                else:
                    allowed = QA_TIERS[tier]
            mine = [p for p in pats if p in allowed]
            for _ in range(12 if tier in ("L2", "L3") else 8):
                # A pattern may not fit a scenario: try another pair. Half from the examples
                # (Self-Instruct's inspiration), half from every pattern of the kind: at 80 %
                # the seeds' patterns saturated (a third of the proposals past 10k tasks were
                # near-duplicates of them) while others went unused.
                pattern = rng.choice(mine) if mine and rng.random() < 0.5 else \
                    rng.choice(allowed)
                if rng.random() >= PATTERN_RATE.get(str(pattern), 1.0):
                    continue
                s = rng.choice(scenarios)
                scn = self.resolver(str(s.get("scenario_id")))
                if scn is None:
                    continue
                p = self.instantiate(str(pattern), scn, rng)
                if p is not None and (tier is None or p.difficulty == tier):
                    lines.append(p.to_json())
                    break
        return "\n".join(lines)

    def _bad(self, rng: random.Random, scenarios: list[dict[str, Any]]) -> str:
        k = rng.randrange(3)
        sid = str(scenarios[0].get("scenario_id"))
        if k == 0:
            return json.dumps({"instruction": "Improve coverage for the cell-edge users.",
                               "kind": "action", "difficulty": "L2", "family": "cell_edge",
                               "scenario_id": "0" * 16, "pattern": "ue_throughput",
                               "goal": {"target": "network", "metric": "min_dl_satisfaction",
                                        "op": ">=", "value": 0.8}})
        if k == 1:
            return json.dumps({"instruction": "Make the network faster overall.",
                               "kind": "action", "difficulty": "L2", "family": "uniform",
                               "scenario_id": sid, "pattern": "net_satisfaction",
                               "goal": {"target": "network", "metric": "speed", "op": ">=",
                                        "value": 1}})
        return '{"instruction": "Which cell is the busiest?", "kind": "qa", "goal": {"answ'

    # -- patterns -------------------------------------------------------------------------------
    def instantiate(self, pattern: str, scn: Scenario, rng: random.Random,
                    text: str | None = None) -> Proposal | None:
        """A task of `pattern` on `scn`, or None if the scenario does not fit the pattern.
        `text` replaces the phrase banks with one template (hand-written seed tasks)."""
        _, v = self.model.view(scn)
        if not v.in_domain:
            # The verifiers will not trust any verdict on a network the model was not calibrated
            # for; a task there can only end as a reject.
            return None
        p = (self._action(pattern, scn, v, rng) if pattern in ACTION_PATTERNS
             else self._qa(pattern, scn, v, rng))
        if p is not None and p.kind == "action" and not certainly_unmet(p.goal, v):
            # The problem must be certain under the model: the goal fails at every edge of the
            # uncertainty band now (else "fixing" it may be fixing nothing).
            return None
        if p is not None and text is not None:
            try:
                p.instruction = text.format(**self._last_kw)
            except KeyError:  # the template speaks of a quantity this instance does not use
                return None
            if SNAPSHOT_HEAD in self._last_snapshot:
                p.instruction += self._last_snapshot
        return p

    def _fill(self, bank: list[str], rng: random.Random, **kw: Any) -> str:
        return rng.choice(bank).format(**kw)

    def _frame(self, core: str, kind: str, scn: Scenario, rng: random.Random) -> str:
        """Persona and context before the core sentence, motivation or format after it."""
        kw = {"family": scn.family.replace("_", " "), "n_cells": len(scn.cells),
              "n_ues": len(scn.ues), "layout": scn.layout, "isd": round(scn.isd_m)}
        if kind == "action":
            tail = [rng.choice(WHY), rng.choice(WHY)]
            persona = rng.choice(ACTION_PERSONA)
            parts = [persona, self._fill(CONTEXT, rng, **kw), *self._facts(scn, rng),
                     paraphrase(core, rng)]
            # Motivation before or after the request, one or two sentences of it.
            parts = [*tail[:1], *parts, *tail[1:]] if rng.random() < 0.3 else [*parts, *tail]
            return " ".join(dict.fromkeys(p for p in parts if p))
        parts = [rng.choice(PERSONA), self._fill(CONTEXT, rng, **kw), core, rng.choice(FORMAT)]
        reason = rng.choice(REASON)
        # The reason goes before the context, before the question or at the very end; facts
        # come after the question (a question that names no entity refers back to the
        # sentence before it, which must not be a fact about another one).
        parts.insert(rng.choice([1, 2, 4]), reason)
        parts[parts.index(core) + 1:parts.index(core) + 1] = self._facts(scn, rng)
        return " ".join(p for p in parts if p)

    def _facts(self, scn: Scenario, rng: random.Random) -> list[str]:
        """0-2 true statements about the network's configuration (never its KPIs), the kind of
        detail a ticket carries: they vary instructions by the scenario's own entities and
        numbers (so ROUGE-L dedup keeps more of them) and act as distractors for the solver."""
        out = []
        for _ in range(rng.choices((0, 1, 2), weights=(35, 40, 25))[0]):
            if rng.random() < 0.55:
                i = rng.randrange(len(scn.ues))
                u = scn.ues[i]
                opts = [f"UE {i} requests {_r(u.dl_rate_mbps, 2)} Mbps downlink.",
                        f"UE {i} is a QCI {u.qci} subscriber served from the {u.server}.",
                        f"UE {i} " + ("is static." if u.mobility == "static" else
                                      f"walks at {_r(u.speed_mps, 1)} m/s.")]
                if u.ul_rate_mbps > 0:
                    opts.append(f"UE {i} also sends {_r(u.ul_rate_mbps, 2)} Mbps uplink.")
            else:
                i = rng.randrange(len(scn.cells))
                c = scn.cells[i]
                opts = [f"Cell {i} radiates {_r(c.tx_power_dbm, 1)} dBm over "
                        f"{c.bandwidth_rbs} RBs.", f"Cell {i} runs the {c.scheduler} scheduler.",
                        f"Cell {i} uses {_r(c.ho_hysteresis_db, 1)} dB of hysteresis and a "
                        f"{c.ho_ttt_ms} ms time-to-trigger."]
                if not c.active:
                    opts.append(f"Cell {i} is switched off.")
                opts.append(f"The edge host adds {_r(scn.edge_delay_ms, 1)} ms, the cloud "
                            f"{_r(scn.cloud_delay_ms, 1)} ms.")
            out.append(rng.choice(opts))
        return list(dict.fromkeys(out))

    def _frontier(self, scn: Scenario, v: KpiView, target: str, metric: str, better: float,
                  ctx: dict[str, Any], rng: random.Random, reachable: bool = False
                  ) -> tuple[float, float, dict[str, Any]] | None:
        """(v0, threshold, best change): the threshold lies between the value now and the best
        value one of the planner's candidate changes reaches (or, for 1 task in 4 unless
        `reachable`, beyond it, where only a two-change plan may get)."""
        v0 = lookup(v, target, metric)
        if v0 is None:
            return None
        # Work with the model's uncertainty band, not its mean: the value now is taken at its
        # most favourable edge and a candidate's at its least favourable one, so a threshold
        # between them is certainly unmet now and certainly met once that change is made.
        # (Placed between the means, half the goals ended uncertain: the outcome verifier
        # refuses a verdict the ensemble's spread could overturn.)
        start = _edge(v, target, metric, better)
        cands = Planner(random.Random(rng.random()), PolicyConfig()).candidates(
            {"target": target, "metric": metric, "op": ">=" if better > 0 else "<=",
             "value": 0.0}, ctx)
        outs: list[tuple[float, dict[str, Any]]] = []
        head = cands[:8 if reachable else 4]
        if reachable:
            # The planner lists the rarely useful changes (scheduler, QCI, shaping) last, so the
            # cut above dropped them and they were seldom named as a fix (set_scheduler in 0.3 %
            # of samples): a guided ticket also scores those, for one forward pass each.
            head += [c for c in cands[8:] if FIX_WEIGHT.get(c["tool"], 1.0) > 3.0]
        made: list[tuple[dict[str, Any], Scenario]] = []
        for c in head:
            try:
                made.append((c, H.CONFIGURE[c["tool"]](scn, c["args"]).scenario))
            except H.ToolError:
                continue
        # One batched forward pass for every candidate state not seen yet.
        self.model.warm([new for _, new in made])
        for c, new in made:
            after = self.model.view(new)[1]
            val = _edge(after, target, metric, -better)
            if val is not None and after.in_domain:
                outs.append((val, c))
        if not outs or start is None:
            return None
        floor = 0.05 * max(abs(v0), 1e-3)
        if reachable:
            # A guided ticket names one change that reaches the goal; rarer fixes are named
            # more often (FIX_WEIGHT) so that every configure tool is taught as a fix.
            ok = [o for o in outs if (o[0] - start) * better >= floor]
            if not ok:
                return None
            best, change = rng.choices(ok, weights=[FIX_WEIGHT.get(o[1]["tool"], 1.0)
                                                    for o in ok])[0]
            # A change that does not help at all (not even at its most favourable edge): a
            # ticket may ask for it to be tried first, then rolled back (see TRIAL).
            bad = [o[1] for o in outs if o[1] != change and o[1]["tool"] != change["tool"]
                   and (o[0] - start) * better < 0]
            self._trial = rng.choices(bad, weights=[FIX_WEIGHT.get(c["tool"], 1.0)
                                                    for c in bad])[0] if bad else None
        else:
            best, change = max(outs, key=lambda o: o[0] * better)
        gain = (best - start) * better
        if gain < floor:
            return None
        frac = rng.uniform(0.3, 0.85) if reachable or rng.random() < 0.75 else \
            rng.uniform(1.02, 1.25)
        return v0, start + better * gain * frac, change

    def _ctx(self, scn: Scenario, v: KpiView, ue: int | None, cell: int | None, kind: str,
             metric: str) -> dict[str, Any]:
        ctx: dict[str, Any] = {"kind": kind, "metric": metric, "ue": ue, "cell": cell}
        if cell is not None:
            c = scn.cells[cell]
            ctx["cell_cfg"] = {"bandwidth_rbs": c.bandwidth_rbs, "tx_power_dbm": c.tx_power_dbm,
                               "scheduler": c.scheduler, "ho_hysteresis_db": c.ho_hysteresis_db,
                               "ho_ttt_ms": c.ho_ttt_ms}
        if cell is not None:
            ctx["cell_cfg"]["ho_algorithm"] = scn.cells[cell].ho_algorithm
            mine = [{"ue": u["ue"], "qci": u["qci"], "dl_offered_mbps": u["dl_offered_mbps"]}
                    for u in v.ues if u["serving_cell"] == cell]
            heavy = heaviest(mine, ue)
            if heavy is not None:
                ctx["heavy"] = (heavy["ue"], heavy["dl_offered_mbps"])
        if ue is not None:
            ctx["server"] = scn.ues[ue].server
            ctx["qci"] = scn.ues[ue].qci
            ctx["mobile"] = scn.ues[ue].mobility != "static"
            rsrp = v.phys.rsrp_dbm_all
            others = [i for i, x in enumerate(scn.cells) if x.active and i != cell]
            if others:
                ctx["neighbor"] = max(others, key=lambda i: rsrp[ue, i])
        return ctx

    def _action(self, pattern: str, scn: Scenario, v: KpiView, rng: random.Random
                ) -> Proposal | None:
        ues, cells, net = v.ues, v.cells, v.network
        act = [c for c in cells if c["active"]]
        kw: dict[str, Any] = {"family": scn.family.replace("_", " "), "n_cells": len(scn.cells)}
        if pattern == "ue_throughput":
            u = rng.choice(sorted(range(len(ues)), key=lambda i: ues[i]["dl_satisfaction"])[:3])
            cell = ues[u]["serving_cell"]
            target, metric, better, kind = f"ue:{u}", "dl_throughput_mbps", 1.0, "ue"
            kw.update(ue=u, cell=cell, thr=_r(ues[u]["dl_throughput_mbps"], 2),
                      off=_r(ues[u]["dl_offered_mbps"], 2))
        elif pattern == "ue_delay":
            order = sorted(range(len(ues)), key=lambda i: -(ues[i]["delay_ms"] or 0.0))
            u = rng.choice(order[:3])
            cell = ues[u]["serving_cell"]
            target, metric, better, kind = f"ue:{u}", "delay_ms", -1.0, "ue"
            kw.update(ue=u, cell=cell, delay=_r(ues[u]["delay_ms"] or 0.0, 1))
        elif pattern == "cell_load":
            busy = sorted((c for c in act if c["n_ues"]), key=lambda c: -c["prb_utilization"])
            if not busy:
                return None
            cell, u = busy[0]["cell"], None
            target, metric, better, kind = f"cell:{cell}", "prb_utilization", -1.0, "cell"
            kw.update(cell=cell, prb=_r(busy[0]["prb_utilization"]), n=busy[0]["n_ues"])
        elif pattern == "energy":
            if len(act) < 3:
                return None
            quiet = sorted(act, key=lambda c: (c["prb_utilization"], c["cell"]))
            ctx = {"kind": "network", "metric": "total_power_w",
                   "quiet": [c["cell"] for c in quiet[:3]], "n_active": len(act)}
            fr = self._frontier(scn, v, "network", "total_power_w", -1.0, ctx, rng)
            if fr is None:
                return None
            t = _r(fr[1], 1)
            kw.update(power=_r(net["total_power_w"], 1), t=t)
            # The service side condition: nobody starved below half their current share when
            # everyone is served today; where someone already is starved (a floor near 0 says
            # nothing), keep 90 % of the traffic delivered instead.
            if net["min_dl_satisfaction"] >= 0.2:
                floor = _r(0.5 * net["min_dl_satisfaction"], 2)
                service = {"target": "network", "metric": "min_dl_satisfaction", "op": ">=",
                        "value": floor}
                service_text = self._fill(CONSTRAINT["min_sat"], rng, f=floor)
                kw.update(f=floor)
            else:
                carried = _r(0.9 * net["dl_throughput_mbps"], 1)
                service = {"target": "network", "metric": "dl_throughput_mbps", "op": ">=",
                        "value": carried}
                service_text = self._fill(CONSTRAINT["carried"], rng, c=carried)
                kw.update(c=carried)
            self._last_kw = kw
            goal: dict[str, Any] = {"all": [{"target": "network", "metric": "total_power_w",
                                             "op": "<=", "value": t}, service]}
            text = self._frame(" ".join([self._fill(OPEN["energy"], rng, **kw),
                                         self._fill(ASK["energy"], rng, t=t), service_text,
                                         rng.choice(CLOSE)]).strip(), "action", scn, rng)
            return Proposal(text, "action", rng.choice(["L2", "L3"]), scn.family,
                            scn.scenario_id, goal, pattern)
        elif pattern == "net_satisfaction":
            w = min(range(len(ues)), key=lambda i: (ues[i]["dl_satisfaction"], i))
            cell, u = ues[w]["serving_cell"], w
            target, metric, better, kind = "network", "min_dl_satisfaction", 1.0, "ue"
            kw.update(sat=_r(net["min_dl_satisfaction"]))
        elif pattern == "slice_sla":
            bad = [x for x in ues if not x["sla_ok"]]
            # Only a slice with a violation that holds at the favourable edge of the band can
            # get a certainly-unmet goal (packet loss is in the band: most UEs just over the
            # loss budget are no certain violators), so the others are not searched. The
            # ticket stays rare: after any fix nearly every UE violates the loss budget at the
            # pessimistic edge, so a count goal is seldom certainly met (docs/BENCHMARKS.md).
            sure = [x for x in bad if (e := v.band_ue(UNCERTAIN_K, x["ue"])) is None
                    or not e[1]["sla_ok"]]
            if not sure:
                return None
            q = rng.choice(sorted({x["qci"] for x in sure}))
            first = min((x for x in sure if x["qci"] == q), key=lambda x: x["ue"])
            viol = sum(1 for x in bad if x["qci"] == q)
            u, cell = first["ue"], first["serving_cell"]
            target, metric, better, kind = f"qci:{q}", "sla_violations", -1.0, "ue"
            kw.update(qci=q, viol=viol)
        elif pattern == "ho_maint":
            return self._ho_maint(scn, v, rng, kw)
        elif pattern == "qci_move":
            return self._qci_move(scn, rng, kw)
        elif pattern == "handovers":
            ho = net.get("total_handovers") or 0.0
            if ho <= 0:
                return None
            cell = max(act, key=lambda c: (c.get("handovers", 0.0), -c["cell"]))["cell"]
            u = None
            target, metric, better, kind = "network", "total_handovers", -1.0, "cell"
            kw.update(ho=_r(ho, 1))
        else:
            return None
        steer = metric
        if pattern == "net_satisfaction":
            steer = "dl_throughput_mbps"
        elif pattern == "slice_sla":
            # The planner steers on the first violating UE: its delay when that is what breaks
            # (over 100 ms), else its rate.
            slow = u is not None and (ues[u]["delay_ms"] or 0.0) > 100
            steer = "delay_ms" if slow else "dl_throughput_mbps"
        ctx = self._ctx(scn, v, u, cell, kind, steer)
        if pattern == "handovers":
            ctx["metric"] = "total_handovers"
        if pattern == "slice_sla":
            ctx["slice"] = True
        # Guided tasks name the change to make (a ticket that already holds the diagnosis):
        # short, L1/L2 episodes (measure, maybe what_if, apply, re-measure) next to the
        # search-heavy L3 ones.
        guided = pattern in GUIDED_PATTERNS and rng.random() < self.guided_rate
        self._trial = None
        fr = self._frontier(scn, v, target, metric, better, ctx, rng, reachable=guided)
        if fr is None:
            return None
        nd = 0 if metric == "sla_violations" or metric == "total_handovers" else (
            3 if metric in ("prb_utilization", "min_dl_satisfaction") else 2)
        op = ">=" if better > 0 else "<="
        if nd:
            t = _r(fr[1], nd)
        else:
            # Counts: a strict bound one above the wanted count, so that reaching it leaves a
            # margin (a verdict exactly on the threshold is never certain).
            t, op = float(int(fr[1]) + 1 if better < 0 else int(fr[1])), "<" if better < 0 \
                else ">"
            if t <= 0:
                return None
        cond = {"target": target, "metric": metric, "op": op, "value": t}
        # `fix` names the change that reaches the threshold (hand-written guided seed tickets).
        kw.update(t=t, fix=describe_change(fr[2]))
        self._last_kw = kw
        parts = [self._fill(OPEN[pattern], rng, **kw), self._fill(ASK[pattern], rng, **kw)]
        goal = cond
        if guided and self._trial is not None and rng.random() < TRIAL_RATE:
            # Try-then-roll-back ticket: the first change falls short, the planner undoes it
            # and applies the fallback (measure, try, re-measure, roll back, apply, re-measure).
            parts.insert(1, rng.choice(TRIAL).format(a=describe_change(self._trial),
                                                     c=describe_change(fr[2])))
            return Proposal(self._frame(" ".join(p for p in parts if p), "action", scn, rng),
                            "action", "L2", scn.family, scn.scenario_id, goal, pattern)
        if guided:
            parts.insert(1, rng.choice(GUIDE).format(c=describe_change(fr[2])))
            parts.append(rng.choice(CLOSE))
            return Proposal(self._frame(" ".join(p for p in parts if p), "action", scn, rng),
                            "action", "L1", scn.family, scn.scenario_id, goal, pattern)
        if rng.random() < self.compose_rate:
            # Composition: a second pattern's KPI becomes a side constraint with some slack.
            side = rng.choice(["min_sat", "power", "prb"])
            if side == "min_sat" and metric != "min_dl_satisfaction":
                f = _r(0.6 * net["min_dl_satisfaction"], 2)
                extra = {"target": "network", "metric": "min_dl_satisfaction", "op": ">=",
                         "value": f}
                parts.append(self._fill(CONSTRAINT["min_sat"], rng, f=f))
            elif side == "power":
                p = _r(net["total_power_w"] * 1.15, 1)
                extra = {"target": "network", "metric": "total_power_w", "op": "<=", "value": p}
                parts.append(self._fill(CONSTRAINT["power"], rng, p=p))
            else:
                m = _r(max(0.95, net["max_prb_utilization"]), 3)
                extra = {"target": "network", "metric": "max_prb_utilization", "op": "<=",
                         "value": m}
                parts.append(self._fill(CONSTRAINT["prb"], rng, m=m))
            goal = {"all": [cond, extra]}
        parts.append(rng.choice(CLOSE))
        diff = "L3" if "all" in goal or rng.random() < 0.4 else "L2"
        return Proposal(self._frame(" ".join(p for p in parts if p), "action", scn, rng),
                        "action", diff, scn.family, scn.scenario_id, goal, pattern)

    def _ho_maint(self, scn: Scenario, v: KpiView, rng: random.Random, kw: dict[str, Any]
                  ) -> Proposal | None:
        """A work order on one cell's handover settings or its scheduler (see HO_MAINT)."""
        from forge.ns3.grid import TTT_MS

        act = [c["cell"] for c in v.cells if c["active"]]
        if not act:
            return None
        cell = rng.choice(act)
        cfg = scn.cells[cell]
        # The scheduler too: as a fix of a KPI goal the model rarely finds it worth making
        # (set_scheduler was the fix in 0.3-0.4 % of samples), yet operators change it.
        what = rng.choice(["algorithm", "hysteresis", "ttt", "scheduler"])
        change: dict[str, Any]
        cond: dict[str, Any]
        if what == "scheduler":
            on = not K.gbr_scheduler(cfg.scheduler)
            change = {"tool": "set_scheduler",
                      "args": {"cell": cell, "scheduler": rng.choice(["pss", "cqa"]) if on
                               else "pf"}}
            cond = {"target": f"cell:{cell}", "metric": "gbr_scheduler", "op": "==",
                    "value": 1.0 if on else 0.0}
        elif what == "algorithm" or cfg.ho_algorithm == "none":
            on = cfg.ho_algorithm == "none"
            change = {"tool": "set_handover_algorithm",
                      "args": {"cell": cell, "algorithm": "a3_rsrp" if on else "none"}}
            cond = {"target": f"cell:{cell}", "metric": "ho_enabled", "op": "==",
                    "value": 1.0 if on else 0.0}
        elif what == "hysteresis":
            h = rng.choice([x for x in HO_HYSTERESIS if abs(x - cfg.ho_hysteresis_db) >= 1.0])
            change = {"tool": "set_handover_params", "args": {"cell": cell, "hysteresis_db": h}}
            cond = {"target": f"cell:{cell}", "metric": "ho_hysteresis_db", "op": "==",
                    "value": h}
        else:
            t = rng.choice([x for x in TTT_MS if x != cfg.ho_ttt_ms])
            change = {"tool": "set_handover_params", "args": {"cell": cell, "ttt_ms": t}}
            cond = {"target": f"cell:{cell}", "metric": "ho_ttt_ms", "op": "==",
                    "value": float(t)}
        kw.update(cell=cell)
        return self._work_order(scn, change, cond, HO_MAINT, rng, kw, "ho_maint")

    def _qci_move(self, scn: Scenario, rng: random.Random, kw: dict[str, Any]
                  ) -> Proposal | None:
        """A plan change: one UE's bearer remapped to another QCI (see QCI_MOVE)."""
        u = rng.randrange(len(scn.ues))
        old = scn.ues[u].qci
        new = rng.choice([q for q in range(1, 10) if q != old])
        change = {"tool": "set_ue_qci", "args": {"ue": u, "qci": new}}
        cond = {"target": f"ue:{u}", "metric": "qci", "op": "==", "value": float(new)}
        kw.update(ue=u, old=old, new=new)
        return self._work_order(scn, change, cond, QCI_MOVE, rng, kw, "qci_move")

    def _work_order(self, scn: Scenario, change: dict[str, Any], cond: dict[str, Any],
                    bank: list[str], rng: random.Random, kw: dict[str, Any], pattern: str
                    ) -> Proposal | None:
        """A ticket that orders `change`, its goal the setting itself (`cond`), half of them
        with a service guard; L1, or L2 with the guard."""
        try:
            after = self.model.view(H.CONFIGURE[change["tool"]](scn, change["args"]).scenario)[1]
        except H.ToolError:
            return None
        if not after.in_domain:
            return None
        kw.update(c=describe_change(change))
        parts = [self._fill(bank, rng, **kw)]
        goal: dict[str, Any] = cond
        if rng.random() < 0.5:
            # The guard: the worst UE's satisfaction stays near where it is, with slack below
            # the least favourable edge of the band after the change (so it holds for certain).
            low = _edge(after, "network", "min_dl_satisfaction", -1.0)
            if low is not None and low >= 0.2:
                f = math.floor(0.9 * low * 100) / 100
                parts.append(self._fill(CONSTRAINT["min_sat"], rng, f=f))
                goal = {"all": [cond, {"target": "network", "metric": "min_dl_satisfaction",
                                       "op": ">=", "value": f}]}
        self._last_kw = kw
        parts.append(rng.choice(CLOSE))
        return Proposal(self._frame(" ".join(p for p in parts if p), "action", scn, rng),
                        "action", "L1" if goal is cond else "L2", scn.family, scn.scenario_id,
                        goal, pattern)

    # -- multi-step questions ---------------------------------------------------------------------
    def _qa_multi(self, pattern: str, scn: Scenario, v: KpiView, rng: random.Random,
                  kw: dict[str, Any]) -> Proposal | None:
        """A question that needs aggregation or comparison across cells or slices, a what-if,
        or a computation on a reading. Its difficulty is the number of calls the answer takes
        (a per-cell question costs one call per cell with UEs, plus the listing)."""
        ues, cells = v.ues, v.cells
        ans: dict[str, Any]
        calls = 1
        if pattern in ("qa_cell_agg", "qa_cell_pct", "qa_cell_gap", "qa_cell_spread"):
            ml = rng.choice(sorted(AGG_METRICS))
            metric = AGG_METRICS[ml]
            per = {c["cell"]: [float(u[metric]) for u in ues if u["serving_cell"] == c["cell"]
                               and u[metric] is not None]
                   for c in cells if c["active"] and c["n_ues"] > 0}
            if len(per) < 2 or not all(per.values()):
                return None
            if pattern == "qa_cell_agg":
                agg = rng.choice(["mean", "average", "total", "minimum", "maximum"]
                                 if metric == "dl_throughput_mbps" else
                                 ["mean", "average", "minimum", "maximum"])
                score = {c: _agg(xs, AGG_WORDS[agg]) for c, xs in per.items()}
                hl = rng.choice(["highest", "lowest"])
                kw.update(hl=hl, agg=agg, ml=ml)
                calls += len(per)
            elif pattern == "qa_cell_pct":
                p = rng.choice([5, 10, 20, 25, 50, 75, 80, 90, 95])
                score = {c: float(K.percentile(xs, p) or 0.0) for c, xs in per.items()}
                hl = rng.choice(["highest", "lowest"])
                kw.update(hl=hl, p=p, ml=ml)
                calls += len(per)
            elif pattern == "qa_cell_gap":
                agg = rng.choice(["minimum", "maximum"])
                score = {c: abs(_agg(xs, "mean") - _agg(xs, AGG_WORDS[agg]))
                         for c, xs in per.items()}
                hl = "highest"
                kw.update(agg=agg, ml=ml)
                calls += 2 * len(per)
            else:
                p1, p2 = rng.choice([(90, 10), (75, 25), (95, 5), (80, 20), (90, 50)])
                score = {c: abs(float(K.percentile(xs, p1) or 0.0)
                                - float(K.percentile(xs, p2) or 0.0)) for c, xs in per.items()}
                hl = "highest"
                kw.update(p1=p1, p2=p2, ml=ml)
                calls += 2 * len(per)
            best = _clear_winner(score, hl, metric, [x for xs in per.values() for x in xs])
            if best is None:
                return None
            ans = {"type": "integer", "value": best}
        elif pattern == "qa_slice_agg":
            ml = rng.choice(sorted(AGG_METRICS))
            metric = AGG_METRICS[ml]
            per = {q: [float(u[metric]) for u in ues if u["qci"] == q and u[metric] is not None]
                   for q in sorted({u["qci"] for u in ues})}
            if len(per) < 2 or not all(per.values()):
                return None
            agg = rng.choice(["mean", "average", "minimum", "maximum"])
            hl = rng.choice(["highest", "lowest"])
            score = {q: _agg(xs, AGG_WORDS[agg]) for q, xs in per.items()}
            best = _clear_winner(score, hl, metric, [x for xs in per.values() for x in xs])
            if best is None:
                return None
            kw.update(hl=hl, agg=agg, ml=ml)
            calls += len(per)
            ans = {"type": "integer", "value": best}
        elif pattern == "qa_whatif_busy":
            act = [c["cell"] for c in cells if c["active"]]
            c = rng.choice(act)
            bw = scn.cells[c].bandwidth_rbs
            if len(act) > 2 and rng.random() < 0.5:
                change: dict[str, Any] = {"tool": "set_cell_state",
                                          "args": {"cell": c, "active": False}}
                kw.update(off=True)
            elif bw != BANDWIDTHS_RB[-1]:
                rbs = rng.choice([b for b in BANDWIDTHS_RB if b > bw])
                change = {"tool": "set_bandwidth", "args": {"cell": c, "bandwidth_rbs": rbs}}
                kw.update(off=False, rbs=rbs)
            else:
                return None
            try:
                after = self.model.view(H.CONFIGURE[change["tool"]](scn, change["args"])
                                        .scenario)[1]
            except H.ToolError:
                return None
            ranked = sorted(after.cells, key=lambda x: (-x["prb_utilization"], x["cell"]))
            if not after.in_domain or len(ranked) < 2 or ranked[0]["prb_utilization"] - \
                    ranked[1]["prb_utilization"] < 0.02:
                return None
            kw.update(c=c)
            ans = {"type": "integer", "value": ranked[0]["cell"]}
        elif pattern == "qa_capacity":
            c = rng.choice([x["cell"] for x in cells if x["active"] and x["n_ues"] > 0] or [-1])
            if c < 0:
                return None
            rbs = rng.choice([b for b in BANDWIDTHS_RB if b != scn.cells[c].bandwidth_rbs])
            r = H.estimate_capacity(_ScenarioOnly(scn),  # type: ignore[arg-type]
                                    {"cell": c, "bandwidth_rbs": rbs})
            if r["capacity_mbps"] is None:
                return None
            kw.update(c=c, rbs=rbs)
            ans = {"type": "number", "value": round(float(r["capacity_mbps"]), 3),
                   "tol_rel": 0.01, "tol_abs": 0.01}
        elif pattern == "qa_cqi_of":
            x = round(rng.uniform(-8.0, 24.0), 1)
            kw.update(x=x)
            ans = {"type": "integer", "value": K.cqi_of(x)}
        elif pattern == "qa_cqi_gain":
            u = rng.randrange(len(ues))
            s = ues[u]["sinr_db"]
            d = rng.choice([2, 3, 4, 5, 6])
            if s is None or min(abs(s + d - t) for t in K.CQI_SINR_DB) < 0.8:
                # Measurement noise (0.5 dB) must not move the reading across a CQI step.
                return None
            kw.update(ue=u, d=d)
            calls = 2
            ans = {"type": "integer", "value": K.cqi_of(s + d)}
        elif pattern == "qa_list_max":
            what = rng.choice(sorted(LIST_MAX))
            key = LIST_MAX[what]
            vals = {i: (c.tx_power_dbm if key == "tx_power_dbm" else c.bandwidth_rbs
                        if key == "bandwidth_rbs" else cells[i]["n_ues"])
                    for i, c in enumerate(scn.cells)}
            order = sorted(vals, key=lambda i: (-vals[i], i))
            if len(order) < 2 or vals[order[0]] == vals[order[1]]:
                return None
            kw.update(what=what)
            ans = {"type": "integer", "value": order[0]}
        elif pattern == "qa_heavy_ue":
            c = rng.choice([x["cell"] for x in cells if x["active"] and x["n_ues"] > 1] or [-1])
            if c < 0:
                return None
            mine = sorted((u for u in ues if u["serving_cell"] == c),
                          key=lambda u: (-u["dl_offered_mbps"], u["ue"]))
            if mine[0]["dl_offered_mbps"] == mine[1]["dl_offered_mbps"]:
                return None
            kw.update(c=c)
            ans = {"type": "integer", "value": mine[0]["ue"]}
        elif pattern == "qa_server_of":
            u = rng.randrange(len(ues))
            kw.update(ue=u)
            ans = {"type": "string", "value": scn.ues[u].server}
        else:
            return None
        self._last_kw = kw
        bank = MULTI_TEXT[pattern]
        if pattern == "qa_whatif_busy":
            bank = [t for t in bank if ("switched off" in t) == kw["off"]]
        text = self._fill(bank, rng, **kw)
        if pattern in QA_TIERS["L2"]:
            text = vary_multi(text, rng)
        return Proposal(self._frame(text, "qa", scn, rng), "qa", tier_of(calls), scn.family,
                        scn.scenario_id, {"answer": ans}, pattern)

    @staticmethod
    def _neighbor(scn: Scenario, v: KpiView, c: int, rng: random.Random
                  ) -> tuple[bool, int] | None:
        """(nearest?, answer) for a neighbour question on cell `c`: the nearest neighbour, or
        the one most of c's UEs hear within 6 dB (what get_neighbors reports), when it is
        unique; None otherwise."""
        pos = scn.enb_positions()
        others = [n for n in range(len(scn.cells)) if n != c]
        if len(others) < 2:
            return None
        if rng.random() < 0.5:
            d = {n: float(((pos[n][0] - pos[c][0]) ** 2 + (pos[n][1] - pos[c][1]) ** 2) ** 0.5)
                 for n in others}
            order = sorted(others, key=lambda n: (d[n], n))
            return (True, order[0]) if d[order[1]] - d[order[0]] >= 1.0 else None
        rsrp = v.phys.rsrp_dbm_all
        mine = [u["ue"] for u in v.ues if u["serving_cell"] == c]
        cnt = {n: sum(1 for u in mine if rsrp[u, n] > -1e9 and rsrp[u, c] - rsrp[u, n] <= 6)
               for n in others}
        order = sorted(others, key=lambda n: (-cnt[n], n))
        return (False, order[0]) if cnt[order[0]] > cnt[order[1]] else None

    def _qa(self, pattern: str, scn: Scenario, v: KpiView, rng: random.Random
            ) -> Proposal | None:
        ues, cells = v.ues, v.cells
        act = [c for c in cells if c["active"]]
        kw: dict[str, Any] = {"family": scn.family.replace("_", " "), "n_cells": len(scn.cells)}
        u = rng.randrange(len(ues))
        c = rng.choice(act)["cell"]
        kw.update(ue=u, cell=c)
        self._last_kw = kw
        self._last_snapshot = ""
        ans: dict[str, Any]
        diff = "L1"
        if pattern in MULTI_PATTERNS:
            return self._qa_multi(pattern, scn, v, rng, kw)
        if pattern == "qa_concept":
            text, val = rng.choice(CONCEPT_TEXT)
            return Proposal(text, "qa", "L1", scn.family, scn.scenario_id,
                            {"answer": {"type": "string", "value": val}}, pattern)
        if pattern in SNAP_TEXT:
            snap = {"cells": [{"cell": x["cell"], "active": x["active"], "n_ues": x["n_ues"],
                               "prb_utilization": _r(x["prb_utilization"])} for x in cells],
                    "ues": [{"ue": x["ue"], "serving_cell": x["serving_cell"],
                             "dl_throughput_mbps": _r(x["dl_throughput_mbps"])}
                            for x in ues[:16]]}
            if pattern == "snap_busiest":
                ranked = sorted(act, key=lambda x: -x["prb_utilization"])
                if len(ranked) < 2 or ranked[0]["prb_utilization"] - \
                        ranked[1]["prb_utilization"] < 0.02:
                    return None
                ans = {"type": "integer", "value": ranked[0]["cell"]}
            elif pattern == "snap_lowest":
                shown = snap["ues"]
                lo = min(shown, key=lambda x: (x["dl_throughput_mbps"], x["ue"]))
                ans = {"type": "integer", "value": lo["ue"]}
            else:
                ans = {"type": "integer", "value": next(x["n_ues"] for x in cells
                                                        if x["cell"] == c)}
            self._last_snapshot = ("\n\n" + SNAPSHOT_HEAD
                                   + json.dumps(snap, separators=(",", ":")))
            text = self._frame(self._fill(SNAP_TEXT[pattern], rng, **kw), "qa", scn, rng) \
                + self._last_snapshot
            return Proposal(text, "qa", "L1", scn.family, scn.scenario_id, {"answer": ans},
                            pattern)
        if pattern == "qa_busiest":
            ranked = sorted(act, key=lambda x: -x["prb_utilization"])
            if len(ranked) < 2 or ranked[0]["prb_utilization"] - \
                    ranked[1]["prb_utilization"] < 0.08:
                return None
            ans = {"type": "integer", "value": ranked[0]["cell"]}
        elif pattern == "qa_worst_ue":
            ranked_u = sorted(ues, key=lambda x: x["dl_satisfaction"])
            if len(ranked_u) < 2 or ranked_u[1]["dl_satisfaction"] - \
                    ranked_u[0]["dl_satisfaction"] < 0.08:
                return None
            ans = {"type": "integer", "value": ranked_u[0]["ue"]}
        elif pattern == "qa_multi_hop":
            ranked = sorted(act, key=lambda x: -x["prb_utilization"])
            if len(ranked) < 2 or ranked[0]["prb_utilization"] - \
                    ranked[1]["prb_utilization"] < 0.08:
                return None
            mine = sorted((x for x in ues if x["serving_cell"] == ranked[0]["cell"]),
                          key=lambda x: x["dl_throughput_mbps"])
            if len(mine) < 2 or mine[1]["dl_throughput_mbps"] - \
                    mine[0]["dl_throughput_mbps"] < 0.1 * max(mine[1]["dl_throughput_mbps"],
                                                              0.1):
                return None
            ans = {"type": "integer", "value": mine[0]["ue"]}
            diff = "L1"
        elif pattern == "qa_cell_sinr":
            if cells[c]["mean_sinr_db"] is None or not cells[c]["n_ues"]:
                return None
            ans = {"type": "number", "ref": {"target": f"cell:{c}", "metric": "mean_sinr_db"},
                   "tol_abs": 1.5}
        elif pattern == "qa_cell_ho":
            # The shipped model predicts almost no handovers: 0 is a fine answer when true.
            ans = {"type": "number", "ref": {"target": f"cell:{c}", "metric": "handovers"},
                   "tol_abs": 0.5}
        elif pattern == "qa_net_ho":
            ans = {"type": "number", "ref": {"target": "network", "metric": "total_handovers"},
                   "tol_abs": 0.5}
        elif pattern == "qa_neighbor":
            nb = self._neighbor(scn, v, c, rng)
            if nb is None:
                return None
            near, nval = nb
            bank = [t for t in QA_TEXT[pattern] if ("6 dB" in t) != near]
            return Proposal(self._frame(self._fill(bank, rng, **kw), "qa", scn, rng), "qa",
                            "L1", scn.family, scn.scenario_id,
                            {"answer": {"type": "integer", "value": nval}}, pattern)
        elif pattern == "qa_ue_thr":
            ans = {"type": "number", "ref": {"target": f"ue:{u}",
                                             "metric": "dl_throughput_mbps"},
                   "tol_rel": 0.08, "tol_abs": 0.01}
        elif pattern == "qa_ue_delay":
            if ues[u]["delay_ms"] is None:
                return None
            ans = {"type": "number", "ref": {"target": f"ue:{u}", "metric": "delay_ms"},
                   "tol_rel": 0.08, "tol_abs": 0.5}
        elif pattern == "qa_ue_sla":
            ans = {"type": "boolean", "ref": {"target": f"ue:{u}", "metric": "sla_ok"}}
        elif pattern == "qa_ue_serving":
            ans = {"type": "integer", "ref": {"target": f"ue:{u}", "metric": "serving_cell"}}
        elif pattern == "qa_cell_nues":
            ans = {"type": "integer", "ref": {"target": f"cell:{c}", "metric": "n_ues"}}
        elif pattern == "qa_busiest_load":
            ans = {"type": "number", "ref": {"target": "network",
                                             "metric": "max_prb_utilization"},
                   "tol_abs": 0.05}
        elif pattern == "qa_cell_prb":
            ans = {"type": "number", "ref": {"target": f"cell:{c}",
                                             "metric": "prb_utilization"},
                   "tol_abs": 0.05}
        elif pattern in _UE_REF:
            metric, tol = _UE_REF[pattern]
            if ues[u][metric] is None or (pattern == "qa_ue_ul" and
                                          scn.ues[u].ul_rate_mbps <= 0):
                return None
            ans = {"type": "number", "ref": {"target": f"ue:{u}", "metric": metric}, **tol}
        elif pattern in _CELL_REF:
            metric, typ, tol = _CELL_REF[pattern]
            if cells[c][metric] is None:
                return None
            ans = {"type": typ, "ref": {"target": f"cell:{c}", "metric": metric}, **tol}
        elif pattern == "qa_cell_sched":
            ans = {"type": "string", "value": scn.cells[c].scheduler}
        elif pattern == "qa_net_thr":
            ans = {"type": "number", "ref": {"target": "network",
                                             "metric": "dl_throughput_mbps"}, "tol_rel": 0.08}
        elif pattern == "qa_net_delay":
            if v.network["mean_delay_ms"] is None:
                return None
            ans = {"type": "number", "ref": {"target": "network", "metric": "mean_delay_ms"},
                   "tol_rel": 0.08, "tol_abs": 0.5}
        elif pattern == "qa_net_active":
            ans = {"type": "integer", "ref": {"target": "network", "metric": "n_active_cells"}}
        elif pattern == "qa_qci_nues":
            q = rng.choice(sorted(v.qci))
            kw.update(qci=q)
            ans = {"type": "integer", "ref": {"target": f"qci:{q}", "metric": "n_ues"}}
        elif pattern == "qa_slice_delay":
            q = rng.choice(sorted(v.qci))
            if v.qci[q]["mean_delay_ms"] is None:
                return None
            kw.update(qci=q)
            ans = {"type": "number", "ref": {"target": f"qci:{q}", "metric": "mean_delay_ms"},
                   "tol_rel": 0.08, "tol_abs": 0.5}
        elif pattern == "qa_slice_budget":
            q = rng.choice(sorted(v.qci))
            kw.update(qci=q)
            ans = {"type": "integer", "value": int(K.DELAY_BUDGET_MS[q])}
        elif pattern == "qa_power":
            ans = {"type": "number", "ref": {"target": "network", "metric": "total_power_w"},
                   "tol_rel": 0.05}
        elif pattern == "qa_sla_count":
            ans = {"type": "integer", "ref": {"target": "network", "metric": "sla_violations"}}
        else:
            return None
        return Proposal(self._frame(self._fill(QA_TEXT[pattern], rng, **kw), "qa", scn, rng),
                        "qa", diff, scn.family, scn.scenario_id, {"answer": ans}, pattern)
