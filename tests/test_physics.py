import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from forge.experiment_model import physics
from forge.scenario import CellConfig, Scenario, UeConfig


def test_rsrp_and_snr_of_a_lone_ue_match_the_closed_form():
    # One cell at 30 dBm over 25 RBs, UE 50 m away horizontally (eNB 30 m, UE 1.5 m high).
    s = Scenario(cells=[CellConfig(tx_power_dbm=30, bandwidth_rbs=25)],
                 ues=[UeConfig(x_m=50, y_m=20, dl_rate_mbps=1)])
    ph = physics.compute(s)
    d = math.sqrt(50**2 + 20**2 + 28.5**2)
    rsrp = 30 - 10 * math.log10(300) - (15.3 + 37.6 * math.log10(d))
    assert abs(ph.rsrp_dbm[0] - rsrp) < 1e-9
    # measured by ns-3 for this very scenario: RSRP -77.18 dBm, SINR 46.06 dB
    assert abs(ph.rsrp_dbm[0] - (-77.18)) < 0.05
    assert abs(ph.sinr_db[0] - 46.06) < 0.05


def test_serving_cell_is_the_strongest_active_one():
    s = Scenario(layout="line", isd_m=500,
                 cells=[CellConfig(), CellConfig(active=False), CellConfig()],
                 ues=[UeConfig(x_m=490, y_m=0, dl_rate_mbps=1)])
    ph = physics.compute(s)
    assert ph.serving[0] in (0, 2)  # never the switched-off cell 1
    assert not np.isfinite(ph.rsrp_dbm_all[0, 1])


@given(st.lists(st.floats(0.001, 5.0), min_size=1, max_size=30))
def test_water_fill_is_max_min_fair(demands):
    d = np.array(demands)
    share = physics.water_fill(d, np.zeros(len(d), dtype=int), 1)
    t = share * d
    assert np.all(share <= 1 + 1e-9) and np.all(share >= 0)
    assert t.sum() <= 1 + 1e-6
    if d.sum() > 1:
        assert abs(t.sum() - 1) < 1e-6  # an overloaded cell uses all its airtime
        cut = t < d - 1e-9
        # every UE that is cut gets the same airtime, no less than any UE that is not cut
        if cut.any():
            assert np.ptp(t[cut]) < 1e-9
            assert np.all(t[~cut] <= t[cut].max() + 1e-9)
    else:
        assert np.allclose(share, 1)
