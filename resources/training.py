"""Training launchers: where ``python -m aiflow.train`` runs. Local subprocess by default;
Kubernetes GPU pods in production (``resources/k8s_training.py``). Chosen by the profile.

A failed training names its cause: the error the process reported (sorted by the process itself as an
infrastructure fault or not, :data:`aiflow.train.contract.FAULT_KEY`), a killed process by its signal, and the
tail of its stderr. Infrastructure faults are retried with backoff (:mod:`resources.faults`); nothing else is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import deque
from typing import NoReturn

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DagsterExecutionInterruptedError,
    OpExecutionContext,
    PipesClientCompletedInvocation,
    PipesTempFileContextInjector,
    PipesTempFileMessageReader,
    open_pipes_session,
)
from pydantic import Field

from aiflow.storage.faults import INFRASTRUCTURE, USER, Fault, clean
from aiflow.train.contract import EXTRAS_KEY, FAULT_KEY, TrainRequest, TrainResult
from resources.faults import raise_for

ENTRYPOINT = ["-m", "aiflow.train"]
#: stderr lines of a failed training kept in the step's failure message.
STDERR_TAIL_LINES = 20


class TrainingLauncher(ConfigurableResource):
    """Runs the training entrypoint for one request and returns what it reported through Pipes."""

    infrastructure_retries: int = Field(
        3, ge=0, description="Retries of a training that failed on infrastructure (a store or the network down, a killed process)."
    )
    infrastructure_retry_wait_s: float = Field(
        15.0, ge=0, description="Seconds before the first such retry; doubled at each further one."
    )

    def launch(
        self, context: AssetExecutionContext | OpExecutionContext, request: TrainRequest, env: dict[str, str] | None = None
    ) -> PipesClientCompletedInvocation:
        raise NotImplementedError

    @staticmethod
    def extras(request: TrainRequest) -> dict:
        return {EXTRAS_KEY: request.model_dump(mode="json")}

    def fail(self, context, fault: Fault, metadata: dict | None = None) -> NoReturn:
        """Retry the step for an infrastructure fault (with backoff), fail it at once otherwise."""
        raise_for(
            context, fault, retries=self.infrastructure_retries, wait_s=self.infrastructure_retry_wait_s, what="training",
            metadata=metadata,
        )  # fmt: skip


def _tee(stream, tail: deque) -> None:
    """Copy the child's stderr to ours line by line, keeping the last lines for the failure message."""
    for line in stream:
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))
    stream.close()


def process_fault(returncode: int, reported: dict | None) -> Fault:
    """Why the training process failed: what it reported, else how it ended (a signal is the machine's doing)."""
    if reported:
        return Fault(reported["kind"], reported["message"], reported.get("store"))
    if returncode < 0 or returncode in (128 + signal.SIGKILL, 128 + signal.SIGTERM):
        number = -returncode if returncode < 0 else returncode - 128
        return Fault(INFRASTRUCTURE, f"the training process was killed by {signal.Signals(number).name} (exit {returncode})")
    return Fault(USER, f"the training process exited with code {returncode} without reporting an error")


class SubprocessTrainingLauncher(TrainingLauncher):
    """The entrypoint as a local subprocess (the embedded default)."""

    python: str = Field(sys.executable, description="Python interpreter that runs the entrypoint.")

    def launch(self, context, request, env=None):
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        with open_pipes_session(
            context=context,
            context_injector=PipesTempFileContextInjector(),
            message_reader=PipesTempFileMessageReader(),
            extras=self.extras(request),
        ) as session:
            process = subprocess.Popen(
                [self.python, *ENTRYPOINT],
                env={**os.environ, **(env or {}), **session.get_bootstrap_env_vars()},
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
            reader = threading.Thread(target=_tee, args=(process.stderr, tail), name="training-stderr", daemon=True)
            reader.start()
            try:
                process.wait()
            except DagsterExecutionInterruptedError:
                context.log.info("training interrupted: sending SIGINT to the training process")
                process.send_signal(signal.SIGINT)
                process.wait(timeout=20)
                raise
            finally:
                reader.join(timeout=5)
        invocation = PipesClientCompletedInvocation(session)
        if process.returncode != 0:
            reported = next((m[FAULT_KEY] for m in reversed(invocation.get_custom_messages()) if isinstance(m, dict) and FAULT_KEY in m), None)
            fault = process_fault(process.returncode, reported)
            text = clean("\n".join(tail))
            self.fail(context, Fault(fault.kind, f"{fault.message}\n\nLast stderr lines of the training process:\n{text}", fault.store),
                      {"exit_code": process.returncode})  # fmt: skip
        return invocation


class ResultLost(ConnectionError):
    """The training ended well but its result never reached Dagster."""


def train_result(invocation: PipesClientCompletedInvocation) -> TrainResult:
    """The :class:`TrainResult` the entrypoint reported (its last custom message holding one).

    Raises:
        ResultLost: the process ended well but no result reached Dagster (an infrastructure fault: retried).
    """
    results = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "artifact_sha256" in m]
    if not results:
        raise ResultLost(
            "the training process exited 0 but its result never reached Dagster (the Pipes message channel or "
            "Dagster's storage failed while it ran); the rerun reuses the checkpoint"
        )
    return TrainResult.model_validate(results[-1])
