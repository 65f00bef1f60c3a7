"""Bad input ends in one readable line and a non-zero exit, before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main


def test_config_command_prints_the_resolved_config(capsys):
    assert main(["config", "--set", "train.epochs=3"]) == 0
    assert "epochs: 3" in capsys.readouterr().out


def test_check_data_prints_counts(capsys):
    assert main(["check-data"]) == 0
    out = capsys.readouterr().out
    assert "1797 images" in out and "10 classes" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--set", "train.epoch=3"], "train.epoch: unknown key"),
        (["run", "--set", "train.lr=-1"], "train.lr"),
        (["run", "--set", "oops"], "bad --set"),
        (["run", "--config", "nope.yaml"], "config file nope.yaml not found"),
        (["run", "--set", "data.source=npz", "--set", "data.path=missing.npz"], "missing.npz: not found"),
        # The gate's names, checked against what the run will produce (issue 15, item 3).
        (
            ["run", "--set", "gate.primary=adv/autoatack/eps_0.1/acc"],
            "did you mean adv/autoattack/eps_0.1/acc?",
        ),
        (["run", "--set", "evaluation.autoattack.enabled=false"], "it comes from evaluation.autoattack"),
        (
            ["run", "--set", "gate.max={corruption/mce: 1.2, shift/acc: 0.5}"],
            "it comes from evaluation.shift_data",
        ),
        (
            ["run", "--set", "defences=[pgd_at]", "--set", "gate.min={certified/r_0.25/acc: 0.5}"],
            "it comes from a smoothing defence",
        ),
        (
            ["run", "--set", "gate.spec_checks=[edge_blnk]"],
            "'edge_blnk' is not a specification check (did you mean edge_blank?",
        ),
        (
            ["run", "--set", "evaluation.specification.checks=[recall_floor]"],
            "is not run: add it to evaluation.specification.checks",
        ),
        (["run", "--set", "device=cuda"], "no CUDA device")
        if not __import__("torch").cuda.is_available()
        else (["run", "--set", "model.name=x"], "unknown model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # nothing written for a run that cannot succeed


def test_console_script_bad_data_no_traceback(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full((10, 8, 8), np.nan), y=np.arange(10) % 2)
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--set", "data.source=npz", "--set", f"data.path={bad}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "NaN or inf" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
