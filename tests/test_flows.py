"""Prefect: the flow in a test harness, and the real user path - a local Prefect server, the
deployments served, `prefect deployment run forge/generate --watch` from the CLI."""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")
pytestmark = [pytest.mark.flows]


def test_flow_in_harness_grows_the_pool(tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.forge_flow import deployments, forge

    db = str(tmp_path / "h.duckdb")
    with prefect_test_harness(server_startup_timeout=60):
        out = forge(rounds=1, tasks_per_round=8, db=db, model="closed-form", workers=1,
                    fan_out=True)
    assert out["status"] == "completed" and out["verified_added"] > 50
    con = duckdb.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM tasks WHERE round = 1").fetchone()[0] > 0  # type: ignore[index]
    con.close()
    names = {d.name for d in deployments()}
    assert {"generate", "seed", "calibrate"} <= names
    # Prefect stores parameters: no parameter may carry a secret.
    params = set(inspect.signature(forge.fn).parameters)
    assert not {p for p in params if "key" in p.lower() and p != "api_key_secret_block"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.mark.prefect_server
def test_real_user_path_prefect_server_serve_and_deployment_run(tmp_path: Path) -> None:
    """What the README tells users to do, with every process started by the test."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tempfile.mkdtemp(prefix="forge-prefect-server-")
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO),
           "PREFECT_UI_ENABLED": "false"}
    log = open(tmp_path / "procs.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=REPO, env=env, stdout=log, stderr=log,
                              start_new_session=True)
    served: subprocess.Popen[bytes] | None = None
    db = tmp_path / "user.duckdb"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("prefect server did not become healthy")
        served = subprocess.Popen([sys.executable, "-m", "flows.forge_flow", "serve"],
                                  cwd=REPO, env=env, stdout=log, stderr=log,
                                  start_new_session=True)
        # Wait until the deployment is registered.
        for _ in range(600):
            r = httpx.post(f"{api}/deployments/filter", json={}, timeout=5)
            if any(d["name"] == "generate" for d in r.json()):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the generate deployment was not registered")
        run = subprocess.run(
            [PREFECT, "deployment", "run", "forge/generate", "--param", "rounds=1",
             "--param", "tasks_per_round=8", "--param", f"db={db}", "--param",
             "model=closed-form", "--param", "workers=1", "--watch",
             "--watch-timeout", "240"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "Completed" in run.stdout + run.stderr
    finally:
        if served is not None:
            _stop(served)
        _stop(server)
        log.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        added = con.execute("SELECT count(*) FROM tasks WHERE round = 1").fetchone()[0]  # type: ignore[index]
        verified = con.execute("SELECT count(*) FROM trajectories WHERE status = 'verified'"
                               ).fetchone()[0]  # type: ignore[index]
        run_status = con.execute("SELECT status FROM generation_runs").fetchall()
    finally:
        con.close()
    assert added > 0 and verified > 50 and run_status == [("completed",)]
