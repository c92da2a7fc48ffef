import json

import pytest
from pydantic import ValidationError

from forge.ns3.grid import FAMILIES, GridError, load_grid, sample_grid, sample_scenario, split_of
from forge.scenario import CellConfig, Scenario, UeConfig


def _scn(**kw):
    base = dict(cells=[CellConfig()], ues=[UeConfig(x_m=10, y_m=0, dl_rate_mbps=1.0)])
    base.update(kw)
    return Scenario(**base)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"cells": [{"tx_power_dbm": -3}]}, "tx_power_dbm"),
        ({"cells": [{"scheduler": "fifo"}]}, "scheduler"),
        ({"cells": [{"bandwidth_rbs": 42}]}, "bandwidth_rbs"),
        ({"ues": []}, "ues"),
        ({"cells": []}, "cells"),
        ({"ues": [{"x_m": 0, "y_m": 0, "dl_rate_mbps": -1}]}, "dl_rate_mbps"),
        ({"ues": [{"x_m": 0, "y_m": 0, "dl_rate_mbps": 1, "qci": 10}]}, "qci"),
        ({"cells": [{"active": False}]}, "cells"),
        ({"sim_time_s": 0.5}, "sim_time_s"),
    ],
)
def test_invalid_scenarios_name_the_field(bad, field):
    data = json.loads(_scn().model_dump_json())
    data.update(bad)
    with pytest.raises(ValidationError) as e:
        Scenario.model_validate(data)
    assert field in str(e.value)


def test_unknown_field_is_rejected():
    data = json.loads(_scn().model_dump_json())
    data["cells"][0]["txpower"] = 30
    with pytest.raises(ValidationError, match="txpower"):
        Scenario.model_validate(data)


def test_scenario_id_ignores_metadata_only():
    a = _scn(seed=1, family="uniform")
    assert a.scenario_id == _scn(seed=2, family="hotspot").scenario_id
    assert a.scenario_id != _scn(rng_run=2).scenario_id
    assert a.scenario_id != _scn(cells=[CellConfig(tx_power_dbm=31)]).scenario_id


def test_hex_positions():
    s = _scn(cells=[CellConfig()] * 7, isd_m=500)
    pos = s.enb_positions()
    assert pos[0] == (0.0, 0.0)
    assert all(abs((x * x + y * y) ** 0.5 - 500) < 1e-6 for x, y in pos[1:])


def test_grid_is_reproducible_and_covers_the_space():
    a, b = sample_grid(60, seed=3), sample_grid(60, seed=3)
    assert [s.scenario_id for s in a] == [s.scenario_id for s in b]
    assert {s.family for s in a} == set(FAMILIES)
    assert {len(s.cells) for s in a} == set(range(1, 8))
    assert {c.scheduler for s in a for c in s.cells} == {"pf", "rr", "pss", "cqa"}
    assert max(len(s.ues) for s in a) <= 40
    assert any(u.mobility == "random_walk" for s in a for u in s.ues)
    assert {u.server for s in a for u in s.ues} == {"edge", "cloud"}
    # a scenario is reproducible from its seed and hypercube point alone
    assert sample_scenario(a[5].seed).scenario_id == sample_scenario(a[5].seed).scenario_id


def test_split_is_by_seed_and_near_80_20():
    splits = [split_of(s) for s in range(5000)]
    assert splits == [split_of(s) for s in range(5000)]
    assert 0.17 < splits.count("heldout") / 5000 < 0.23


def test_grid_file(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text("\n".join(s.model_dump_json() for s in sample_grid(3)) + "\n")
    assert len(load_grid(str(p))) == 3
    p.write_text('{"cells": []}\n')
    with pytest.raises(GridError, match=r"g.jsonl:1"):
        load_grid(str(p))
    with pytest.raises(GridError, match="neither"):
        load_grid("no-such-grid")


def test_cached_id_follows_copies():
    a = _scn()
    first = a.scenario_id
    b = a.model_copy(update={"rng_run": 7})
    assert b.scenario_id != first
    assert a.scenario_id == first
    c = a.model_copy(update={"cells": [CellConfig(tx_power_dbm=12)]})
    assert c.scenario_id == Scenario.model_validate_json(c.model_dump_json()).scenario_id


def test_canonical_json_assembled_from_entries_is_the_whole_dump() -> None:
    """The content hash is built from per-cell and per-UE texts kept on the entries: it must
    be the text of dumping the whole scenario, for sampled networks and for changed copies
    (which share the unchanged entries with their base)."""
    import json

    from forge.gym import handlers as H
    from forge.ns3.grid import sample_grid
    from forge.scenario import METADATA_FIELDS, Scenario

    def whole(s: Scenario) -> str:
        return json.dumps(s.model_dump(mode="json", exclude=set(METADATA_FIELDS)),
                          sort_keys=True, separators=(",", ":"))

    changes = [("set_tx_power", {"cell": 0, "tx_power_dbm": 33.5}),
               ("set_ue_qci", {"ue": 0, "qci": 5}),
               ("set_bandwidth", {"cell": 0, "bandwidth_rbs": 50}),
               ("set_ue_server", {"ue": 1, "server": "edge"}),
               ("set_handover_params", {"cell": 0, "hysteresis_db": 1.0})]
    n_changed = 0
    for s in sample_grid(60, seed=3) + sample_grid(10, seed=1, handover=True):
        assert s.canonical_json() == whole(s)
        for tool, args in changes:
            t = H.CONFIGURE[tool](s, args).scenario
            assert t.canonical_json() == whole(t)
            n_changed += t.scenario_id != s.scenario_id
        # An entry copied with an update gets a fresh text.
        c = s.cells[0].model_copy(update={"tx_power_dbm": 12.0})
        assert '"tx_power_dbm":12.0' in c.canonical_json()
        again = Scenario.model_validate_json(s.model_dump_json())
        assert again == s  # equality ignores what is cached (s has its id and texts)
        assert again.scenario_id == s.scenario_id
    assert n_changed > 200
