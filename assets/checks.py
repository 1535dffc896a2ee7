"""Turn the engine's quality verdicts into blocking Dagster asset checks."""

from collections.abc import Callable

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSpec, AssetKey, multi_asset_check

from aiflow.data.quality import Verdict
from resources.storage import LakeResource

CHECK_NAMES = ("schema_matches_spec", "key_unique", "null_rates", "row_counts")


def blocking_checks(asset_key: AssetKey, name: str, run: Callable[[LakeResource], dict[str, Verdict]]):
    """One multi-check evaluating every data-quality verdict for ``asset_key``; each check blocks downstream."""

    @multi_asset_check(
        name=name,
        specs=[AssetCheckSpec(check, asset=asset_key, blocking=True) for check in CHECK_NAMES],
    )
    def _checks(context: AssetCheckExecutionContext, lake: LakeResource):
        verdicts = run(lake)
        for check in CHECK_NAMES:
            verdict = verdicts[check]
            if not verdict.passed:
                context.log.error(f"{asset_key.to_user_string()} {check} failed: {verdict.description}")
            yield AssetCheckResult(
                asset_key=asset_key,
                check_name=check,
                passed=verdict.passed,
                description=verdict.description,
                metadata=verdict.metadata,
            )

    return _checks
