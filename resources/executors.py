"""The step executor of each profile.

Measured (``benchmarks/step_overhead.py``, figures in ``benchmarks/README.md``): on a small dataset a
step in its own process costs seconds before it does any work — a new interpreter that imports the
code location and rebuilds the job — so the data plane of ten demo days took ~5x longer with one
process per step than with every step in the run's process, and forking steps from a preloaded
server (``forkserver``) saved little. The local and s3 profiles therefore run a job's steps in the
run's own process (each run is still its own process under ``dagster dev``); the sweep job keeps
parallel step processes (``sensors/sweep.py``), because its variants are long trainings.
``AIFLOW_EXECUTOR`` overrides the choice (``in_process``, ``forkserver``, ``spawn``), e.g. to run the
steps of a very large dataset in separate processes. On Kubernetes the instance's run launcher and the
job's executor decide (``deploy/k8s``), so the k8s profile sets none.
"""

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = ("in_process", "forkserver", "spawn")


def executor_for(profile: str, choice: str | None = None) -> ExecutorDefinition | None:
    """The default executor of every job under ``profile`` (None: Dagster's default); ``choice`` overrides it."""
    if choice is None and profile == "k8s":
        return None
    choice = choice or "in_process"
    if choice not in EXECUTORS:
        raise ValueError(f"unknown AIFLOW_EXECUTOR {choice!r}; choose one of {', '.join(EXECUTORS)}")
    if choice == "in_process":
        return in_process_executor
    return multiprocess_executor.configured({"start_method": {choice: {}}}, name=f"{choice}_multiprocess")


#: Parallel step processes for jobs whose steps are independent long runs (the sweep's trainings).
parallel_executor = multiprocess_executor.configured({"start_method": {"forkserver": {}}}, name="forkserver_multiprocess")
