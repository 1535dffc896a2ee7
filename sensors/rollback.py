"""Rollback job: move the champion back to the version it pointed at before, with a reason."""

from dagster import AssetMaterialization, Config, Failure, OpExecutionContext, job, op
from pydantic import Field

from aiflow.models.registry import Registry, RegistryError
from aiflow.spec import DatasetSpec
from assets.deployment import actor, alias_metadata
from assets.keys import champion_key
from resources.notify import NotifierResource
from resources.storage import LakeResource


class RollbackConfig(Config):
    reason: str = Field("", description="Required: why the alias is rolled back (recorded in the alias history and the notification); "
                        "a run without one is refused.")
    alias: str = Field("champion", description="The alias to move back.")


def rollback_job(spec: DatasetSpec):
    @op(name=f"{spec.name}_rollback_alias", description="Move the alias back to its previous version and record the event.")
    def rollback_alias(context: OpExecutionContext, config: RollbackConfig, lake: LakeResource, notifier: NotifierResource) -> int:
        if not config.reason.strip():
            raise Failure(
                f"{spec.name} rollback refused: give a reason (ops.{spec.name}_rollback_alias.config.reason), e.g. "
                "'v3 mis-scores weekend flights'; it is recorded in the alias history"
            )
        registry = Registry(lake.lake())
        before = registry.alias(spec.name, config.alias)
        try:
            after = registry.rollback(spec.name, reason=config.reason, actor=actor(context), alias=config.alias)
        except RegistryError as exc:  # a refusal (alias not set, nothing earlier): the user's to fix, never retried
            raise Failure(f"{spec.name} rollback refused: {exc}", allow_retries=False) from exc
        context.log.info(f"{spec.name} {config.alias}: v{before} -> v{after} ({config.reason})")
        notifier.notifier().send("rollback", f"{spec.name} {config.alias} rolled back: v{before} -> v{after} ({config.reason})", {"version": after})
        if config.alias == "champion":
            context.log_event(
                AssetMaterialization(
                    asset_key=champion_key(spec),
                    description=f"rolled back from v{before} to v{after}: {config.reason}",
                    metadata={
                        **alias_metadata(registry, spec.name),
                        **({"previous_version": before} if before is not None else {}),
                        "policy": "rollback",
                    },
                )
            )
        return after

    @job(name=f"{spec.name}_rollback_job", description=f"Roll the '{spec.name}' champion back to its previous version.")
    def _rollback():
        rollback_alias()

    return _rollback
