"""Run one `Scenario` in the real ns-3 LTE/EPC module and measure per-UE KPIs.

This module imports ns-3 lazily (the import takes ~10 s and prints harmless cling warnings), so
only processes that really simulate pay for it. Call `simulate()` as many times as you like in one
process: every ns-3 default we rely on is set again on each run and `Simulator.Destroy()` ends it.

Topology, per run:

    UE --LTE-- eNB(cell i) --S1--> SGW/PGW --p2p(edge_delay)--> edge host (1.0.0.0/8)
                                        \\--p2p(cloud_delay)--> cloud host (2.0.0.0/8)

Each UE has a UDP downlink flow from its server (edge or cloud) and optionally an uplink flow back,
carried on a dedicated EPS bearer with the UE's QCI (GBR QCIs get their offered rates as GBR, which
the QoS-aware schedulers PSS/CQA honour). Traffic runs from `app_start_s` to `app_stop_s`, which
leaves time for in-flight packets to arrive, so a UE that is not congested receives exactly what
was sent to it.
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from forge.scenario import SCHEDULERS, Scenario

# Radio propagation: 3GPP TR 36.814 macro pathloss PL = 128.1 + 37.6 log10(d_km), written as a
# log-distance law (exponent 3.76, 15.3 dB at 1 m). ns-3's LTE default (Friis) makes every cell
# reach kilometres, which would make interference and coverage holes unrealistically rare.
PATHLOSS_EXPONENT = 3.76
PATHLOSS_REF_DB = 15.3
UE_HEIGHT_M = 1.5
ENB_HEIGHT_M = 30.0
RSRP_SAMPLE_PERIOD_MS = 10

_ns: Any = None


def ns3_version() -> str:
    try:
        return "ns3-" + metadata.version("ns3")
    except metadata.PackageNotFoundError:  # pragma: no cover - ns3 is a hard dependency
        return "ns3-unknown"


def _load_ns() -> Any:
    global _ns
    if _ns is None:
        from ns import ns

        _ns = ns
    return _ns


def simulate(scn: Scenario, workdir: Path) -> dict[str, Any]:
    """Simulate `scn` and return {"ues": [...per-UE KPIs...], "wall_time_s", "ns3_version"}.

    `workdir` receives ns-3's trace files; give each run its own directory.
    """
    ns = _load_ns()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Stray trace files go to the working directory: keep them in this run's directory.
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        ues = _run(ns, scn, workdir)
    finally:
        ns.Simulator.Destroy()
        os.chdir(cwd)
    return {"ues": ues, "wall_time_s": time.perf_counter() - t0, "ns3_version": ns3_version()}


def _set_defaults(ns: Any, scn: Scenario, workdir: Path) -> None:
    cfg = ns.Config
    ns.RngSeedManager.SetSeed(1)
    ns.RngSeedManager.SetRun(scn.rng_run)
    # Random variables take stream numbers from a process-wide counter that Simulator.Destroy()
    # does not reset: without this, a run's random draws (random access, walks, UL grants)
    # would depend on how many runs the worker process did before it.
    ns.RngSeedManager.ResetNextStreamIndex()
    cfg.SetDefault(
        "ns3::PhyStatsCalculator::DlRsrpSinrFilename",
        ns.StringValue(str(workdir / "DlRsrpSinrStats.txt")),
    )
    cfg.SetDefault("ns3::LteUePhy::RsrpSinrSamplePeriod", ns.UintegerValue(RSRP_SAMPLE_PERIOD_MS))
    # SRS periodicity bounds the number of UEs a cell can admit (periodicity >= UEs per cell).
    cfg.SetDefault("ns3::LteEnbRrc::SrsPeriodicity", ns.UintegerValue(80))
    cfg.SetDefault("ns3::LteHelper::UseIdealRrc", ns.BooleanValue(True))


def _run(ns: Any, scn: Scenario, workdir: Path) -> list[dict[str, Any]]:
    _set_defaults(ns, scn, workdir)
    lte = ns.CreateObject[ns.LteHelper]()
    epc = ns.CreateObject[ns.PointToPointEpcHelper]()
    lte.SetEpcHelper(epc)
    lte.SetAttribute("PathlossModel", ns.StringValue("ns3::LogDistancePropagationLossModel"))
    lte.SetPathlossModelAttribute("Exponent", ns.DoubleValue(PATHLOSS_EXPONENT))
    lte.SetPathlossModelAttribute("ReferenceLoss", ns.DoubleValue(PATHLOSS_REF_DB))

    pgw = epc.GetPgwNode()
    hosts = ns.NodeContainer()
    hosts.Create(2)  # 0: edge, 1: cloud
    ns.InternetStackHelper().Install(hosts)
    routing = ns.Ipv4StaticRoutingHelper()
    host_addr = []
    for k, (delay_ms, net) in enumerate(
        [(scn.edge_delay_ms, "1.0.0.0"), (scn.cloud_delay_ms, "2.0.0.0")]
    ):
        p2p = ns.PointToPointHelper()
        p2p.SetDeviceAttribute("DataRate", ns.DataRateValue(ns.DataRate("100Gb/s")))
        p2p.SetDeviceAttribute("Mtu", ns.UintegerValue(1500))
        p2p.SetChannelAttribute("Delay", ns.TimeValue(ns.MicroSeconds(int(delay_ms * 1000))))
        devs = p2p.Install(pgw, hosts.Get(k))
        addr = ns.Ipv4AddressHelper()
        addr.SetBase(ns.Ipv4Address(net), ns.Ipv4Mask("255.0.0.0"))
        ifaces = addr.Assign(devs)
        host_addr.append(ifaces.GetAddress(1))
        rt = routing.GetStaticRouting(hosts.Get(k).GetObject[ns.Ipv4]())
        rt.AddNetworkRouteTo(ns.Ipv4Address("7.0.0.0"), ns.Ipv4Mask("255.0.0.0"), 1)

    # eNBs: only active cells are installed; cellId -> scenario cell index.
    positions = scn.enb_positions()
    enb_nodes = ns.NodeContainer()
    cell_of_cellid: dict[int, int] = {}
    for idx, cell in enumerate(scn.cells):
        if not cell.active:
            continue
        node = ns.CreateObject[ns.Node]()
        mob = ns.CreateObject[ns.ConstantPositionMobilityModel]()
        mob.SetPosition(ns.Vector(positions[idx][0], positions[idx][1], ENB_HEIGHT_M))
        node.AggregateObject(mob)
        ns.Config.SetDefault("ns3::LteEnbPhy::TxPower", ns.DoubleValue(cell.tx_power_dbm))
        lte.SetSchedulerType(SCHEDULERS[cell.scheduler])
        lte.SetEnbDeviceAttribute("DlBandwidth", ns.UintegerValue(cell.bandwidth_rbs))
        lte.SetEnbDeviceAttribute("UlBandwidth", ns.UintegerValue(cell.bandwidth_rbs))
        if cell.ho_algorithm == "none":
            lte.SetHandoverAlgorithmType("ns3::NoOpHandoverAlgorithm")
        else:
            lte.SetHandoverAlgorithmType("ns3::A3RsrpHandoverAlgorithm")
            lte.SetHandoverAlgorithmAttribute("Hysteresis", ns.DoubleValue(cell.ho_hysteresis_db))
            lte.SetHandoverAlgorithmAttribute(
                "TimeToTrigger", ns.TimeValue(ns.MilliSeconds(cell.ho_ttt_ms))
            )
        dev = lte.InstallEnbDevice(ns.NodeContainer(node)).Get(0)
        cell_id = ns.DynamicCast[ns.LteEnbNetDevice](dev).GetCellId()
        cell_of_cellid[int(cell_id)] = idx
        enb_nodes.Add(node)
    if enb_nodes.GetN() > 1:
        lte.AddX2Interface(enb_nodes)

    # UEs with their mobility.
    xs = [p[0] for p in positions]
    ys = [p[1] for p in positions]
    margin = scn.isd_m
    bounds = ns.Rectangle(
        min(xs + [u.x_m for u in scn.ues]) - margin,
        max(xs + [u.x_m for u in scn.ues]) + margin,
        min(ys + [u.y_m for u in scn.ues]) - margin,
        max(ys + [u.y_m for u in scn.ues]) + margin,
    )
    ue_nodes = ns.NodeContainer()
    for ue in scn.ues:
        node = ns.CreateObject[ns.Node]()
        if ue.mobility == "random_walk":
            mob = ns.CreateObject[ns.RandomWalk2dMobilityModel]()
            mob.SetAttribute("Bounds", ns.RectangleValue(bounds))
            # Straight legs of 1 s in a random direction (ns-3's default turns every metre,
            # which makes a walker jitter in place).
            mob.SetAttribute("Mode", ns.StringValue("Time"))
            mob.SetAttribute("Time", ns.TimeValue(ns.Seconds(1.0)))
            mob.SetAttribute(
                "Speed", ns.StringValue(f"ns3::ConstantRandomVariable[Constant={ue.speed_mps}]")
            )
        else:
            mob = ns.CreateObject[ns.ConstantPositionMobilityModel]()
        node.AggregateObject(mob)
        mob.SetPosition(ns.Vector(ue.x_m, ue.y_m, UE_HEIGHT_M))
        ue_nodes.Add(node)
    ue_devs = lte.InstallUeDevice(ue_nodes)
    ns.InternetStackHelper().Install(ue_nodes)
    ue_ifaces = epc.AssignUeIpv4Address(ue_devs)
    gw = epc.GetUeDefaultGatewayAddress()
    for i in range(ue_nodes.GetN()):
        routing.GetStaticRouting(ue_nodes.Get(i).GetObject[ns.Ipv4]()).SetDefaultRoute(gw, 1)
    lte.Attach(ue_devs)
    imsi_of_ue = [int(ns.DynamicCast[ns.LteUeNetDevice](ue_devs.Get(i)).GetImsi())
                  for i in range(ue_devs.GetN())]

    # Traffic and bearers.
    start, stop = scn.app_window()
    apps = ns.ApplicationContainer()
    dl_sinks, ul_sinks = [], []
    port_owner: dict[int, tuple[int, str]] = {}
    for u, ue in enumerate(scn.ues):
        host = hosts.Get(0 if ue.server == "edge" else 1)
        haddr = host_addr[0 if ue.server == "edge" else 1]
        dl_port, ul_port = 10000 + u, 30000 + u
        port_owner[dl_port] = (u, "dl")
        port_owner[ul_port] = (u, "ul")
        t_start = start + 0.001 * (u % 10)  # a small stagger avoids synchronised bursts
        sink = ns.PacketSinkHelper(
            "ns3::UdpSocketFactory",
            ns.InetSocketAddress(ns.Ipv4Address.GetAny(), dl_port).ConvertTo(),
        ).Install(ue_nodes.Get(u))
        dl_sinks.append(sink)
        apps.Add(sink)
        client = ns.UdpClientHelper(ue_ifaces.GetAddress(u).ConvertTo(), dl_port)
        client.SetAttribute("Interval", ns.TimeValue(ns.Seconds(
            ue.packet_size_bytes * 8 / (ue.dl_rate_mbps * 1e6))))
        client.SetAttribute("PacketSize", ns.UintegerValue(ue.packet_size_bytes))
        client.SetAttribute("MaxPackets", ns.UintegerValue(0))
        c = client.Install(host)
        c.Start(ns.Seconds(t_start))
        c.Stop(ns.Seconds(stop))
        if ue.ul_rate_mbps > 0:
            usink = ns.PacketSinkHelper(
                "ns3::UdpSocketFactory",
                ns.InetSocketAddress(ns.Ipv4Address.GetAny(), ul_port).ConvertTo(),
            ).Install(host)
            ul_sinks.append((u, usink))
            apps.Add(usink)
            uclient = ns.UdpClientHelper(haddr.ConvertTo(), ul_port)
            uclient.SetAttribute("Interval", ns.TimeValue(ns.Seconds(
                ue.packet_size_bytes * 8 / (ue.ul_rate_mbps * 1e6))))
            uclient.SetAttribute("PacketSize", ns.UintegerValue(ue.packet_size_bytes))
            uclient.SetAttribute("MaxPackets", ns.UintegerValue(0))
            uc = uclient.Install(ue_nodes.Get(u))
            uc.Start(ns.Seconds(t_start))
            uc.Stop(ns.Seconds(stop))
        # Dedicated bearer with the UE's QCI for both of its flows.
        tft = ns.Create[ns.EpcTft]()  # a Ptr: a Python-owned object would be freed early
        pf_dl = ns.EpcTft.PacketFilter()
        pf_dl.localPortStart = dl_port
        pf_dl.localPortEnd = dl_port
        tft.Add(pf_dl)
        pf_ul = ns.EpcTft.PacketFilter()
        pf_ul.remotePortStart = ul_port
        pf_ul.remotePortEnd = ul_port
        tft.Add(pf_ul)
        gbr = ns.GbrQosInformation()
        if ue.qci <= 4:
            gbr.gbrDl = int(ue.dl_rate_mbps * 1e6)
            gbr.gbrUl = int(ue.ul_rate_mbps * 1e6)
            gbr.mbrDl = gbr.gbrDl
            gbr.mbrUl = gbr.gbrUl
        bearer = ns.EpsBearer(ue.qci, gbr)
        lte.ActivateDedicatedEpsBearer(ue_devs.Get(u), bearer, tft)
    apps.Start(ns.Seconds(0.0))
    apps.Stop(ns.Seconds(scn.sim_time_s))

    lte.EnableDlPhyTraces()
    fm_helper = ns.FlowMonitorHelper()
    end_hosts = ns.NodeContainer(ue_nodes)
    end_hosts.Add(hosts)
    monitor = fm_helper.Install(end_hosts)

    ns.Simulator.Stop(ns.Seconds(scn.sim_time_s))
    ns.Simulator.Run()

    # --- measurements ---------------------------------------------------------------------
    monitor.CheckForLostPackets()
    classifier = ns.DynamicCast[ns.Ipv4FlowClassifier](fm_helper.GetClassifier())
    flow: dict[tuple[int, str], dict[str, float]] = {}
    for item in monitor.GetFlowStats():
        fid, st = item.first, item.second
        tup = classifier.FindFlow(fid)
        owner = port_owner.get(int(tup.destinationPort))
        if owner is None:
            continue
        flow[owner] = {
            "tx": float(st.txPackets),
            "rx": float(st.rxPackets),
            "delay_s": st.delaySum.GetSeconds(),
            "jitter_s": st.jitterSum.GetSeconds(),
        }
    radio = _parse_rsrp_sinr(workdir / "DlRsrpSinrStats.txt", start)

    ues: list[dict[str, Any]] = []
    ul_sink_of = dict(ul_sinks)
    for u, ue in enumerate(scn.ues):
        window = stop - (start + 0.001 * (u % 10))
        dl_rx = ns.DynamicCast[ns.PacketSink](dl_sinks[u].Get(0)).GetTotalRx()
        ul_rx = (ns.DynamicCast[ns.PacketSink](ul_sink_of[u].Get(0)).GetTotalRx()
                 if u in ul_sink_of else 0)
        dl = flow.get((u, "dl"), {"tx": 0.0, "rx": 0.0, "delay_s": 0.0, "jitter_s": 0.0})
        ul = flow.get((u, "ul"), {"tx": 0.0, "rx": 0.0, "delay_s": 0.0, "jitter_s": 0.0})
        r = radio.get(imsi_of_ue[u], {})
        cellid = r.get("serving_cellid")
        ues.append({
            "ue": u,
            "imsi": imsi_of_ue[u],
            "dl_offered_mbps": ue.dl_rate_mbps,
            "ul_offered_mbps": ue.ul_rate_mbps,
            "dl_throughput_mbps": dl_rx * 8 / window / 1e6,
            "ul_throughput_mbps": ul_rx * 8 / window / 1e6,
            "delay_ms": _mean_delay_ms(dl),
            "ul_delay_ms": _mean_delay_ms(ul),
            "jitter_ms": 1000 * dl["jitter_s"] / max(dl["rx"] - 1, 1) if dl["rx"] > 1 else None,
            "loss_ratio": _loss(dl),
            "ul_loss_ratio": _loss(ul),
            "rsrp_dbm": r.get("rsrp_dbm"),
            "sinr_db": r.get("sinr_db"),
            "serving_cell": cell_of_cellid.get(cellid) if cellid is not None else None,
            "handovers": int(r.get("handovers", 0)),
        })
    return ues


def _mean_delay_ms(f: dict[str, float]) -> float | None:
    return 1000.0 * f["delay_s"] / f["rx"] if f["rx"] > 0 else None


def _loss(f: dict[str, float]) -> float | None:
    return (f["tx"] - f["rx"]) / f["tx"] if f["tx"] > 0 else None


def _parse_rsrp_sinr(path: Path, t_from: float) -> dict[int, dict[str, Any]]:
    """Per IMSI: mean RSRP (dBm), mean SINR (dB), last serving cellId and cell changes.

    File columns: time, cellId, IMSI, RNTI, rsrp (W), sinr (linear), ComponentCarrierId. Each
    sample reports the serving cell, so a change of cellId between samples is a handover.
    """
    if not path.exists() or path.stat().st_size == 0:
        return {}
    data = np.loadtxt(path, comments="%", ndmin=2)
    if data.size == 0:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for imsi in np.unique(data[:, 2]).astype(int):
        rows = data[data[:, 2] == imsi]
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        changes = int(np.count_nonzero(np.diff(rows[:, 1]) != 0))
        meas = rows[rows[:, 0] >= t_from]
        if len(meas) == 0:
            meas = rows
        rsrp = 10 * np.log10(np.maximum(meas[:, 4], 1e-30) * 1000.0)
        sinr = 10 * np.log10(np.maximum(meas[:, 5], 1e-30))
        out[int(imsi)] = {
            "rsrp_dbm": float(np.mean(rsrp)),
            "sinr_db": float(np.mean(sinr)),
            "serving_cellid": int(rows[-1, 1]),
            "handovers": changes,
        }
    return out
