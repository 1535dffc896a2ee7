"""``aiflow monitor``: the monitoring of a dataset from the shell (Evidently's report of any window, on demand)."""

from __future__ import annotations

import argparse
import datetime as dt

from aiflow.spec import window_start_of


def add_monitor_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``monitor`` command group on the ``aiflow`` CLI's subparsers."""
    monitor = subparsers.add_parser("monitor", help="Monitoring: Evidently's drift report of any window, on demand.")
    sub = monitor.add_subparsers(dest="monitor_command", required=True)
    report = sub.add_parser(
        "report",
        help="Write Evidently's HTML drift report of one window (its served records against the serving version's reference).",
        description="The decisions step writes it for every window where a signal fired; this writes it for any other.",
    )
    report.add_argument("dataset", help="Dataset name (its spec: --spec, $AIFLOW_DATASET or the demo).")
    report.add_argument("window", type=dt.date.fromisoformat, help="Any date of the window (YYYY-MM-DD); its window is reported.")
    report.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from aiflow.cli.main import _spec
    from aiflow.monitoring.monitor import References
    from aiflow.monitoring.partition import window_report

    spec = _spec(args)
    if spec.name != args.dataset:
        print(f"aiflow monitor: the spec is '{spec.name}', not '{args.dataset}': pass its file with --spec")
        return 2
    settings = args.settings
    lake = settings.lake()
    start = window_start_of(args.window, spec.monitoring.window)
    refs = References(lake, spec.name, settings.artifact_uri, settings.storage_options())
    uri = window_report(lake, spec, refs, start, _reports(lake))
    if uri is None:
        print(f"aiflow monitor: no served record of '{spec.name}' in the window starting {start}")
        return 1
    first, last = spec.monitoring.window_bounds(start)
    print(f"{spec.name} window {first} .. {last}: {uri}")
    return 0


def _reports(lake):
    """Reports go under the lake root (``monitoring/<dataset>/reports/``), where the decisions step writes them."""
    from aiflow.storage.artifacts import ArtifactStore

    return ArtifactStore(lake.root, storage_options=lake.storage_options or None)
