"""Training launchers: where ``python -m aiflow.train`` runs. Local subprocess by default;
Kubernetes GPU pods in production (``resources/k8s_training.py``). Chosen by the profile."""

import sys

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    OpExecutionContext,
    PipesClientCompletedInvocation,
    PipesSubprocessClient,
)
from pydantic import Field

from aiflow.train.contract import EXTRAS_KEY, TrainRequest, TrainResult

ENTRYPOINT = ["-m", "aiflow.train"]


class TrainingLauncher(ConfigurableResource):
    """Runs the training entrypoint for one request and returns what it reported through Pipes."""

    def launch(
        self, context: AssetExecutionContext | OpExecutionContext, request: TrainRequest, env: dict[str, str] | None = None
    ) -> PipesClientCompletedInvocation:
        raise NotImplementedError

    @staticmethod
    def extras(request: TrainRequest) -> dict:
        return {EXTRAS_KEY: request.model_dump(mode="json")}


class SubprocessTrainingLauncher(TrainingLauncher):
    """The entrypoint as a local subprocess (the embedded default)."""

    python: str = Field(sys.executable, description="Python interpreter that runs the entrypoint.")

    def launch(self, context, request, env=None):
        return PipesSubprocessClient().run(
            context=context, command=[self.python, *ENTRYPOINT], extras=self.extras(request), env=env or {}
        )


def train_result(invocation: PipesClientCompletedInvocation) -> TrainResult:
    """The :class:`TrainResult` the entrypoint reported (its last custom message holding one)."""
    results = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "artifact_sha256" in m]
    if not results:
        raise RuntimeError("the training process reported no result")
    return TrainResult.model_validate(results[-1])
