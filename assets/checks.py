"""Turn the engine's quality verdicts into blocking Dagster asset checks."""

from collections.abc import Callable

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    multi_asset_check,
)

from aiflow.data.quality import CHECK_DESCRIPTIONS, Verdict
from resources.storage import LakeResource

CHECK_NAMES = tuple(CHECK_DESCRIPTIONS)


def blocking_checks(asset_key: AssetKey, name: str, run: Callable[[LakeResource], dict[str, Verdict]]):
    """One multi-check evaluating every data-quality verdict for ``asset_key``; each check blocks downstream.

    A verdict marked ``warn_only`` (the table does not exist yet) fails with WARN severity: visible, not blocking.
    """

    @multi_asset_check(
        name=name,
        specs=[
            AssetCheckSpec(check, asset=asset_key, blocking=True, description=CHECK_DESCRIPTIONS[check]) for check in CHECK_NAMES
        ],
        description=f"Data-quality checks of {asset_key.to_user_string()}: schema, key, null rates, row counts.",
    )
    def _checks(context: AssetCheckExecutionContext, lake: LakeResource):
        verdicts = run(lake)
        for check in CHECK_NAMES:
            verdict = verdicts[check]
            if not verdict.passed:
                log = context.log.warning if verdict.warn_only else context.log.error
                log(f"{asset_key.to_user_string()} {check} failed: {verdict.description}")
            yield AssetCheckResult(
                asset_key=asset_key,
                check_name=check,
                passed=verdict.passed,
                severity=AssetCheckSeverity.WARN if verdict.warn_only else AssetCheckSeverity.ERROR,
                description=verdict.description,
                metadata=verdict.metadata,
            )

    return _checks
