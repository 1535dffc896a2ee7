"""``aiflow models``: the model registry from the command line (list, show, verify, promote, rollback, alias, history, aliases)."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable

import polars as pl

from aiflow.models.metric_names import TEST, VALID, unprefixed
from aiflow.models.registry import Registry, RegistryError
from aiflow.storage.artifacts import ArtifactStore


def add_models_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``models`` command group on the ``aiflow`` CLI's subparsers."""
    models = subparsers.add_parser("models", help="Model registry: versions, aliases, promotion and rollback.")
    sub = models.add_subparsers(dest="models_command", required=True)

    listing = sub.add_parser("list", help="Registered versions (of every model, or of one).")
    listing.add_argument("--name", help="Only this model.")
    listing.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="One version: lineage, metrics, gates, aliases.")
    show.add_argument("name")
    show.add_argument("version", type=int)
    show.add_argument("--card", action="store_true", help="Print the Markdown model card instead of the table.")
    show.set_defaults(func=cmd_show)

    verify = sub.add_parser("verify", help="Check every file of a version's bundle against the registry's digest.")
    verify.add_argument("name")
    verify.add_argument("version", type=int, nargs="?", help="Version to check (default: the champion).")
    verify.set_defaults(func=cmd_verify)

    promote = sub.add_parser("promote", help="Point an alias (champion by default) at a version.")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True, help="Why (recorded in the alias history).")
    promote.add_argument("--alias", default="champion", help="Alias to set (default: champion).")
    promote.add_argument("--force", action="store_true", help="Promote even though the version failed its gates.")
    promote.add_argument("--actor", default=None, help="Who is promoting (default: the current user).")
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="Move an alias back to the version it pointed at before.")
    rollback.add_argument("name")
    rollback.add_argument("--reason", required=True, help="Why (recorded in the alias history).")
    rollback.add_argument("--alias", default="champion", help="Alias to roll back (default: champion).")
    rollback.add_argument("--actor", default=None, help="Who is rolling back (default: the current user).")
    rollback.set_defaults(func=cmd_rollback)

    alias = sub.add_parser("alias", help="The version an alias points at; with --remove, remove the alias (e.g. a canary or challenger).")
    alias.add_argument("name")
    alias.add_argument("alias", help="The alias (canary, challenger, ...).")
    alias.add_argument("--remove", action="store_true", help="Remove the alias: a running server stops serving it at its next reload.")
    alias.add_argument("--reason", help="Why (required with --remove; recorded in the alias history).")
    alias.add_argument("--force", action="store_true", help="Allow removing the champion alias.")
    alias.add_argument("--actor", default=None, help="Who is removing it (default: the current user).")
    alias.set_defaults(func=cmd_alias)

    history = sub.add_parser("history", help="Alias changes of a model, newest first.")
    history.add_argument("name")
    history.add_argument("--alias", help="Only this alias.")
    history.set_defaults(func=cmd_history)

    aliases = sub.add_parser("aliases", help="The aliases of a model in force now.")
    aliases.add_argument("name")
    aliases.set_defaults(func=cmd_aliases)

    champion = sub.add_parser("champion", help="The serving version's headline metrics next to its scikit-learn baseline.")
    champion.add_argument("name")
    champion.set_defaults(func=cmd_champion)


def _registry(args) -> Registry:
    """The registry in the lake the CLI's settings name (``aiflow.cli.main`` puts them on ``args``)."""
    return Registry(args.settings.lake())


def _actor(args) -> str:
    if args.actor:
        return args.actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no $USER/$LOGNAME and no passwd entry (some containers)
        return "unknown"


def _reported(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Registry refusals and bad input print one clear line on stderr and exit 1."""

    @functools.wraps(command)
    def run(args) -> int:
        try:
            return command(args)
        except (RegistryError, ValueError) as exc:
            print(f"aiflow models {args.models_command}: error: {exc}", file=sys.stderr)
            return 1

    return run


def _print(df: pl.DataFrame) -> None:
    with pl.Config(
        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=500, tbl_cols=-1, fmt_str_lengths=100, tbl_width_chars=220
    ):
        print(df)


@_reported
def cmd_list(args) -> int:
    registry = _registry(args)
    versions = registry.versions(args.name)
    if not versions.height:
        what = f"model {args.name!r}" if args.name else "models"
        print(f"no {what} registered under {registry.lake.uri('registry')}")
        return 0
    aliases = (
        registry.current_aliases(args.name)
        .group_by("name", "version")
        .agg(pl.col("alias").sort().str.join(", ").alias("aliases"))
    )
    table = (
        versions.join(aliases, on=["name", "version"], how="left")
        .with_columns(
            pl.col("aliases").fill_null(""),
            (pl.col("training_table").str.split("/").list.slice(-2).list.join("/") + "@" + pl.col("training_version").cast(pl.String)).alias(
                "data"
            ),
            pl.col("artifact_sha256").str.slice(0, 12).alias("sha256"),
            pl.col("metrics").map_elements(_compact, return_dtype=pl.String).alias("metrics"),
            pl.col("created_at").dt.strftime("%Y-%m-%d %H:%M:%S").alias("created_at (UTC)"),
        )
        .with_columns(pl.col("family").fill_null("pytorch"))  # versions registered before families were all networks
        .select("name", "version", "family", "aliases", "created_at (UTC)", "gates_passed", "reason", "data", "metrics", "sha256")
    )
    _print(table)
    return 0


@_reported
def cmd_show(args) -> int:
    registry = _registry(args)
    mv = registry.get(args.name, args.version)
    current = registry.aliases(args.name)
    if args.card:
        from aiflow.models.model_card import model_card

        champion = current.get("champion")
        other = registry.get(args.name, champion) if champion not in (None, mv.version) else None
        print(model_card(mv, spec_name=mv.name, champion=other))
        return 0
    rows = [
        ("name", mv.name),
        ("version", mv.version),
        ("aliases", ", ".join(sorted(a for a, v in current.items() if v == mv.version))),
        ("created_at", mv.created_at.isoformat()),
        ("gates_passed", mv.gates_passed),
        ("reason", mv.reason),
        ("training_table", mv.training_table),
        ("training_version", mv.training_version),
        ("state_version", mv.state_version),
        ("code_version", mv.code_version),
        ("run_id", mv.run_id),
        ("artifact_uri", mv.artifact_uri),
        ("artifact_sha256", mv.artifact_sha256),
        ("family", mv.family or "pytorch"),
        ("model_card_uri", mv.model_card_uri),
        *((f"metric.{k}", v) for k, v in mv.metrics.items()),
        *((f"baseline.{k}", v) for k, v in mv.baseline_metrics.items()),
        *((f"gate.{k}", _gate(r)) for k, r in mv.gate_results.items()),
        ("params", json.dumps(mv.params, sort_keys=True)),
    ]
    _print(pl.DataFrame({"field": [k for k, _ in rows], "value": ["" if v is None else str(v) for _, v in rows]}))
    return 0


@_reported
def cmd_verify(args) -> int:
    from aiflow.models.bundle import BundleIntegrityError, verify_bundle
    from aiflow.models.registry import resolve_location

    registry = _registry(args)
    version = args.version if args.version is not None else registry.alias(args.name, "champion")
    if version is None:
        print(f"aiflow models verify: error: {args.name!r} has no champion; name a version", file=sys.stderr)
        return 1
    mv = registry.get(args.name, version)
    location = resolve_location(mv.artifact_uri, args.settings.artifact_uri)
    store = ArtifactStore(location, storage_options=args.settings.storage_options())
    try:
        bundle = verify_bundle(store, "", mv.artifact_sha256, mv.bundle_files or None)
    except BundleIntegrityError as exc:
        print(f"aiflow models verify: {args.name} v{version} FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} v{version} ({mv.family or bundle.family}) verified: {len(bundle.file_hashes)} files match digest {bundle.digest} ({location})")
    return 0


@_reported
def cmd_promote(args) -> int:
    registry = _registry(args)
    event = registry.promote(args.name, args.version, reason=args.reason, actor=_actor(args), alias=args.alias, force=args.force)
    if event is None:
        print(f"{args.name}: {args.alias} already points at v{args.version}; nothing recorded")
    else:
        was = f"v{event.previous_version}" if event.previous_version is not None else "unset"
        print(f"{args.name}: {args.alias} -> v{args.version} (was {was})")
    return 0


@_reported
def cmd_rollback(args) -> int:
    registry = _registry(args)
    before = registry.alias(args.name, args.alias)
    target = registry.rollback(args.name, reason=args.reason, actor=_actor(args), alias=args.alias)
    was = f"v{before}" if before is not None else "unset"
    print(f"{args.name}: {args.alias} rolled back to v{target} (was {was})")
    return 0


@_reported
def cmd_alias(args) -> int:
    registry = _registry(args)
    current = registry.alias(args.name, args.alias)
    if not args.remove:
        print(f"{args.name}: {args.alias} -> v{current}" if current is not None else f"{args.name}: {args.alias} is not set")
        return 0
    if not (args.reason or "").strip():
        raise ValueError("--remove needs --reason (recorded in the alias history)")
    if current is None:
        raise ValueError(f"{args.name}: alias {args.alias!r} is not set; nothing to remove")
    if args.alias == "champion" and not args.force:
        raise ValueError(f"{args.name}: removing the champion: a running server keeps its loaded version, a restarted one serves "
                         f"nothing for {args.name}; pass --force to do it anyway")  # fmt: skip
    registry.remove_alias(args.name, args.alias, reason=args.reason, actor=_actor(args))
    print(f"{args.name}: {args.alias} removed (was v{current})")
    return 0


@_reported
def cmd_history(args) -> int:
    events = _registry(args).history(args.name, args.alias)
    if not events.height:
        print(f"no alias events for {args.name!r}" + (f" alias {args.alias!r}" if args.alias else ""))
        return 0
    _print(
        events.with_columns(pl.col("set_at").dt.strftime("%Y-%m-%d %H:%M:%S%.3f").alias("set_at (UTC)")).select(
            "set_at (UTC)", "alias", "action", "version", "previous_version", "set_by", "reason"
        )
    )
    return 0


@_reported
def cmd_aliases(args) -> int:
    current = _registry(args).current_aliases(args.name)
    if not current.height:
        print(f"{args.name!r} has no aliases")
        return 0
    _print(current.select("alias", "version"))
    return 0


@_reported
def cmd_champion(args) -> int:
    registry = _registry(args)
    version = registry.alias(args.name, "champion")
    if version is None:
        print(f"{args.name!r} has no champion yet")
        return 1
    mv = registry.get(args.name, version)
    valid, test = unprefixed(VALID, mv.metrics), unprefixed(TEST, mv.metrics)
    names = sorted(set(valid) & set(mv.baseline_metrics))
    print(f"{args.name} champion: v{version} ({mv.family or 'unknown'} family, {mv.artifact_uri}, trained on {mv.training_table}@{mv.training_version})")
    _print(
        pl.DataFrame(
            {
                "metric": names,
                "model (validation)": [valid[n] for n in names],
                "naive reference (validation)": [mv.baseline_metrics[n] for n in names],
                "model (test)": [test.get(n) for n in names],
            }
        )
    )
    return 0


def _compact(metrics_json: str) -> str:
    metrics = json.loads(metrics_json) if metrics_json else {}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in metrics.items())


def _gate(result: dict) -> str:
    if result.get("configured") is False or result.get("state") == "not required":
        return "not required"
    verdict = "passed" if result.get("passed") else "FAILED"
    if result.get("value") is None and result.get("threshold") is None:
        return verdict
    return f"{verdict} (value {result.get('value')}, threshold {result.get('threshold')})"
