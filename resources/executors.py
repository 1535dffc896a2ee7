"""The step executor of each profile.

Locally every step used to start a fresh interpreter that imports the whole code location (dagster,
polars, deltalake, torch, scikit-learn...: several seconds per step, most of a small dataset's run).
The local and s3 profiles fork each step from a server that imported the code location once
(``forkserver``), keeping steps in parallel processes; ``benchmarks/step_overhead.py`` measures it.
``AIFLOW_EXECUTOR`` overrides the choice (``forkserver``, ``spawn``, ``in_process``). On Kubernetes
the instance's run launcher and the job's executor decide (``deploy/k8s``), so the k8s profile sets none.
"""

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = ("forkserver", "spawn", "in_process")


def executor_for(profile: str, choice: str | None = None) -> ExecutorDefinition | None:
    """The default executor of every job under ``profile`` (None: Dagster's default); ``choice`` overrides it."""
    if choice is None and profile == "k8s":
        return None
    choice = choice or "forkserver"
    if choice not in EXECUTORS:
        raise ValueError(f"unknown AIFLOW_EXECUTOR {choice!r}; choose one of {', '.join(EXECUTORS)}")
    if choice == "in_process":
        return in_process_executor
    return multiprocess_executor.configured({"start_method": {choice: {}}}, name=f"{choice}_multiprocess")
