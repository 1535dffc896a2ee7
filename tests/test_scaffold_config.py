"""Scope: `dagster job scaffold_config` works for every job of definitions.defs, and the launchpad shows the factory defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dagster._cli.job import job_cli  # the command behind `dagster job ...`, invoked in-process (one definitions load)

from aiflow.evaluation.gates import GateConfig
from aiflow.train.contract import TrainParams
from definitions import defs

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))


def scaffold(job: str) -> dict:
    result = CliRunner().invoke(job_cli, ["scaffold_config", "-m", "definitions", "-d", str(ROOT), "-j", job])
    assert result.exit_code == 0, f"{job}: {result.output}\n{result.exception!r}"
    return yaml.safe_load(result.output)


@pytest.mark.parametrize("job", JOBS)
def test_every_job_scaffolds(job):
    config = scaffold(job)
    assert {"execution", "loggers", "resources"} <= set(config)
    assert "io_manager" in config["resources"]


def test_the_model_plane_config_is_in_the_scaffold():
    ops = scaffold("flights_lifecycle_job")["ops"]
    assert {"hidden", "learning_rate", "reason"} <= set(ops["flights__candidate"]["config"])
    assert {"absolute", "champion_tolerance", "candidate_id", "use_latest"} <= set(ops["flights__evaluation"]["config"])
    assert {"candidate_id", "use_latest", "policy"} <= set(ops["flights__champion"]["config"])
    assert "reason" in scaffold("flights_rollback_job")["ops"]["flights_rollback_alias"]["config"]


def test_launchpad_shows_factory_defaults():
    """Defaults built by a factory (hidden layers, absolute gate bounds) are in the run config schema."""
    ops = defs.resolve_job_def("flights_lifecycle_job").run_config_schema.config_type.fields["ops"].config_type.fields
    candidate = ops["flights__candidate"].config_type.fields["config"].config_type.fields
    evaluation = ops["flights__evaluation"].config_type.fields["config"].config_type.fields
    assert candidate["hidden"].default_provided and candidate["hidden"].default_value == TrainParams().hidden == [128, 64]
    assert evaluation["absolute"].default_provided and evaluation["absolute"].default_value == GateConfig().absolute
    assert evaluation["champion_tolerance"].default_value == GateConfig().champion_tolerance


@pytest.mark.slow
def test_the_installed_command_scaffolds_the_lifecycle_job():
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "job", "scaffold_config", "-m", "definitions", "-d", str(ROOT), "-j", "lifecycle_job"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "flights__candidate" in yaml.safe_load(out.stdout)["ops"]
