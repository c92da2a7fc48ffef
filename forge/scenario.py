"""Network scenarios: the configuration space that ns-3 simulates and the Experiment Model learns.

A `Scenario` is everything the simulator needs to reproduce a run and everything the Experiment
Model is allowed to look at. It is the contract between the seed runner, the surrogate and (later)
the gym, so it lives here once; `schemas/scenario.schema.json` is generated from it and a test
keeps the two equal.

Geometry: eNBs sit on a line or on a hexagonal pattern (centre first, then the first ring) at a
given inter-site distance; each eNB is one omni cell, so "cell i" and "eNB i" are the same thing.
UEs carry explicit positions, so a scenario is fully determined by its fields (no hidden sampling
at simulation time besides ns-3's own RngRun).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

# ns-3 type names of the MAC schedulers we expose. PSS and CQA are the QoS-aware ones: they
# honour the GBR of GBR bearers (QCI 1-4), which is how slices with guarantees are modelled.
SCHEDULERS: dict[str, str] = {
    "pf": "ns3::PfFfMacScheduler",
    "rr": "ns3::RrFfMacScheduler",
    "pss": "ns3::PssFfMacScheduler",
    "cqa": "ns3::CqaFfMacScheduler",
}
BANDWIDTHS_RB = (6, 15, 25, 50, 75, 100)
GBR_QCIS = (1, 2, 3, 4)
QCIS = (1, 2, 3, 4, 5, 6, 7, 8, 9)

# Scenario fields that describe a run but do not change what ns-3 simulates. They are left out of
# the content hash so that relabelling a scenario does not make it a "new" run.
METADATA_FIELDS = frozenset({"seed", "family"})

Scheduler = Literal["pf", "rr", "pss", "cqa"]
Bandwidth = Literal[6, 15, 25, 50, 75, 100]
Qci = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9]


class _Cached(BaseModel):
    """A model whose private attributes are caches of what its fields determine: equality
    ignores them (pydantic's compares private attributes too, so a scenario whose id had been
    computed was unequal to its twin) and `model_copy` drops them (an update may change what
    they were computed from). Subclasses read them through `__pydantic_private__`: pydantic's
    attribute lookup for private attributes costs more than a cache hit."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False
                   ) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        priv = copy.__pydantic_private__
        assert priv is not None
        for name in priv:
            priv[name] = None
        return copy


class _Entry(_Cached):
    """A cell or UE of a Scenario: its canonical JSON is kept, since a changed scenario shares
    all but the changed entries with the one it was made from (see Scenario.canonical_json)."""

    _json: str | None = PrivateAttr(default=None)

    def canonical_json(self) -> str:
        priv = self.__pydantic_private__
        text: str | None = priv["_json"]  # type: ignore[index]
        if text is None:
            text = priv["_json"] = json.dumps(  # type: ignore[index]
                self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return text


class CellConfig(_Entry):
    """One eNB (one omni cell): its radio settings and handover algorithm."""

    model_config = ConfigDict(extra="forbid")

    tx_power_dbm: float = Field(30.0, ge=0.0, le=46.0, description="eNB transmit power (dBm).")
    bandwidth_rbs: Bandwidth = Field(25, description="DL and UL bandwidth in resource blocks.")
    scheduler: Scheduler = Field("pf", description="MAC scheduler: pf, rr, pss or cqa.")
    active: bool = Field(True, description="False switches the cell off (energy saving).")
    ho_algorithm: Literal["none", "a3_rsrp"] = Field(
        "a3_rsrp", description="Handover algorithm: A3 event on RSRP, or none (no handovers)."
    )
    ho_hysteresis_db: float = Field(3.0, ge=0.0, le=15.0, description="A3 hysteresis (dB).")
    ho_ttt_ms: int = Field(256, ge=0, le=5120, description="A3 time-to-trigger (ms).")


class UeConfig(_Entry):
    """One UE: where it is, how it moves, what it sends and receives, and its slice."""

    model_config = ConfigDict(extra="forbid")

    x_m: float = Field(ge=-20_000.0, le=20_000.0, description="Initial x position (m).")
    y_m: float = Field(ge=-20_000.0, le=20_000.0, description="Initial y position (m).")
    mobility: Literal["static", "random_walk"] = "static"
    speed_mps: float = Field(0.0, ge=0.0, le=40.0, description="Random-walk speed (m/s).")
    dl_rate_mbps: float = Field(gt=0.0, le=150.0, description="Offered downlink UDP rate.")
    ul_rate_mbps: float = Field(0.0, ge=0.0, le=50.0, description="Offered uplink UDP rate.")
    packet_size_bytes: int = Field(1024, ge=64, le=1472, description="UDP payload size.")
    qci: Qci = Field(9, description="Bearer QCI: the UE's slice (1-4 GBR, 5-9 non-GBR).")
    server: Literal["edge", "cloud"] = Field(
        "cloud", description="Where the UE's application server sits: edge (near the PGW) or cloud."
    )

    @model_validator(mode="after")
    def _speed_needs_walk(self) -> UeConfig:
        if self.mobility == "static" and self.speed_mps != 0.0:
            raise ValueError("speed_mps must be 0 for a static UE (use mobility='random_walk')")
        return self


class Scenario(_Cached):
    """A full LTE/EPC network configuration as simulated by `forge.ns3`."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="Scenario seed: sampling seed and the unit of splits.")
    family: str = Field("custom", max_length=64, description="Scenario family label.")
    layout: Literal["line", "hex"] = "hex"
    isd_m: float = Field(500.0, ge=50.0, le=5000.0, description="Inter-site distance (m).")
    cells: list[CellConfig] = Field(min_length=1, max_length=7)
    ues: list[UeConfig] = Field(min_length=1, max_length=64)
    edge_delay_ms: float = Field(2.0, ge=0.0, le=50.0, description="PGW to edge host delay.")
    cloud_delay_ms: float = Field(40.0, ge=0.0, le=300.0, description="PGW to cloud host delay.")
    sim_time_s: float = Field(2.0, ge=0.5, le=20.0, description="Simulated time (s).")
    app_start_s: float = Field(0.3, ge=0.05, le=5.0, description="Traffic starts (s).")
    rng_run: int = Field(1, ge=1, le=2**31 - 1, description="ns-3 RngRun.")
    _id_cache: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        self.check_consistent()
        return self

    def check_consistent(self) -> None:
        """The scenario-wide invariants (raise ValueError); the gym's handlers call it on copies
        whose changed entries they validated themselves."""
        if not any(c.active for c in self.cells):
            raise ValueError("cells: at least one cell must be active")
        start, stop = self.app_window()
        if stop - start < 0.3:
            raise ValueError(
                f"sim_time_s: {self.sim_time_s} s leaves {stop - start:.2f} s of traffic after "
                f"app_start_s and the drain time; at least 0.3 s is needed"
            )

    # -- derived geometry ------------------------------------------------------------------
    def enb_positions(self) -> list[tuple[float, float]]:
        return enb_positions(self.layout, len(self.cells), self.isd_m)

    def app_window(self) -> tuple[float, float]:
        """(start, stop) of traffic. It stops before the end of the simulation by the slowest
        path's delay plus 100 ms, so that packets in flight are delivered and a UE that is not
        congested receives exactly what was sent to it."""
        tail = 0.1 + max(self.edge_delay_ms, self.cloud_delay_ms) / 1000.0
        return self.app_start_s, self.sim_time_s - tail

    # -- identity ---------------------------------------------------------------------------
    def canonical_json(self) -> str:
        """Simulation-relevant content as canonical JSON (metadata excluded): the text of
        `json.dumps(model_dump(mode="json") without metadata, sort_keys=True,
        separators=(",", ":"))`, assembled from the entries' own cached texts (a configure
        call changes one entry; dumping the whole scenario again cost ~0.2 ms a state)."""
        parts = []
        for name in _CANONICAL_FIELDS:
            v = getattr(self, name)
            text = ("[" + ",".join(x.canonical_json() for x in v) + "]"
                    if name in ("cells", "ues") else json.dumps(v))
            parts.append(f"{json.dumps(name)}:{text}")
        return "{" + ",".join(parts) + "}"

    @property
    def scenario_id(self) -> str:
        """Content hash: equal for two scenarios that ns-3 would simulate identically.

        Cached: the gym and the verifiers ask for it thousands of times per second. Scenarios
        are treated as immutable (every change goes through `model_copy(update=...)`, which
        drops the cache below); nothing in forge mutates one in place.
        """
        priv = self.__pydantic_private__
        sid: str | None = priv["_id_cache"]  # type: ignore[index]
        if sid is None:
            sid = priv["_id_cache"] = hashlib.sha256(  # type: ignore[index]
                self.canonical_json().encode()).hexdigest()[:16]
        return sid


_CANONICAL_FIELDS = tuple(sorted(set(Scenario.model_fields) - METADATA_FIELDS))


def enb_positions(layout: str, n: int, isd_m: float) -> list[tuple[float, float]]:
    """eNB coordinates: a line along x, or a hex cluster (centre, then the ring at 30+60k deg)."""
    if layout == "line":
        return [(i * isd_m, 0.0) for i in range(n)]
    pos = [(0.0, 0.0)]
    for k in range(6):
        a = math.radians(30 + 60 * k)
        pos.append((isd_m * math.cos(a), isd_m * math.sin(a)))
    return pos[:n]
