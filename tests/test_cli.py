import subprocess
import sys

import pytest

from forge.__main__ import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("seed", "calibrate", "schemas"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["seed", "calibrate", "schemas"])
def test_each_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_bad_grid_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "forge", "seed", "--grid", "nope", "--db",
                        str(tmp_path / "x.duckdb"), "--no-import"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "neither one of" in r.stderr
    assert "Traceback" not in r.stderr


def test_calibrate_on_an_empty_store_says_what_to_do(tmp_path):
    r = subprocess.run([sys.executable, "-m", "forge", "calibrate", "--db",
                        str(tmp_path / "x.duckdb"), "--no-import", "--out", str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "forge seed" in r.stderr
