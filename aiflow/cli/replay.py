"""``aiflow replay``: a dataset's history through the real loop, run by ``dagster-daemon``.

The replay plays only the outside world. It lands the first training period's files, starts
``dagster-daemon run`` on a fresh instance in the replay's home (sensor intervals shortened by
``AIFLOW_TICK_SECONDS``), and waits: the landing sensor ingests, the retrain sensor trains the first
model. Then ``aiflow serve`` starts, and data time advances one step at a time: the step's files land,
and once the daemon has built their features the application sends the step's records to the server,
and the labels of the records sent ``--label-delay`` earlier to its feedback endpoint. The daemon alone
scores new rows (automation), monitors every window data time has moved past (monitoring sensor),
decides (decisions asset) and retrains (retrain sensor). The replay waits for each of those steps by
reading the lake, never by starting a run or evaluating a sensor. At the end it prints one row per
window and writes a chart; Dagster's own logs are in ``<home>/dagster.log``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

from aiflow.cli import replay_watch as watch
from aiflow.cli.dagster_home import LOCAL_YAML, init_dagster_home
from aiflow.cli.replay_report import chart, render, summary
from aiflow.cli.replay_world import Client, DemoSource, DirectorySource, ReplayTimeout, ingested_through, ledger_holds, wait_for
from aiflow.data.features import serving_rows
from aiflow.models.registry import Registry
from aiflow.monitoring import history
from aiflow.monitoring.partition import window_status
from aiflow.serving.reports import KEY_ENV as REPORT_KEY_ENV
from aiflow.serving.reports import URL_ENV as REPORTS_URL_ENV
from aiflow.spec import EVENT_DATE, DatasetSpec, demo_spec_path, load_spec, read_spec_yaml
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import resolve_uri

ROOT = Path(__file__).resolve().parents[2]
MARKER = ".aiflow_replay"
HOP_TIMEOUT = watch.HOP_TIMEOUT


def _days(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*d?", text.strip())
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of days, e.g. 7d or 90d")
    return int(m.group(1))


def add_replay_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``replay`` on the ``aiflow`` CLI's subparsers."""
    p = subparsers.add_parser(
        "replay",
        help="Replay a dataset's history through the real loop: files land as data time passes, dagster-daemon runs the loop.",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--spec", dest="replay_spec", help="Dataset spec YAML (default: the global --spec, $AIFLOW_DATASET or the demo).")
    p.add_argument("--data", help="Folder with one subfolder per table of the spec (CSV, Parquet, JSON lines); default: the demo year.")
    p.add_argument("--home", dest="replay_home", help="The replay's own home, made afresh (default: .aiflow; refuses a folder it did not make).")
    p.add_argument("--first-train", type=_days, default=90, help="Days of data the first model trains on (default 90d).")
    p.add_argument("--until", type=dt.date.fromisoformat, help="Last day of data to replay (default: the data's last day).")
    p.add_argument("--step", type=_days, default=7, help="Days of data landed at a time (default 7d).")
    p.add_argument("--label-delay", type=_days, default=7, help="Labels come back this long after their records (default 7d).")
    p.add_argument("--window", choices=["daily", "weekly", "monthly"], help="Override the spec's monitoring window for this replay.")
    p.add_argument("--tick", type=int, default=2, help="Seconds between sensor ticks of the replay's daemon (default 2).")
    p.add_argument("--png", help="Where to write the chart (default: <home>/replay.png).")
    p.add_argument("--port", type=int, default=0, help="Port of the aiflow server (default: a free one on 127.0.0.1).")
    p.set_defaults(func=cmd_replay, needs_settings=False)


def say(message: str) -> None:
    print(message, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_home(home: Path) -> None:
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists() and not (home / ".closed_loop_demo").exists():
            raise SystemExit(f"aiflow replay: {home} exists and was not made by a replay: pass another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).touch()


def _spec_for(path: str, window: str | None, home: Path) -> tuple[DatasetSpec, str]:
    spec = load_spec(path)
    if window is None or window == spec.monitoring.window:
        return spec, str(Path(path).resolve())
    data = read_spec_yaml(Path(path).read_text())
    monitoring = dict(data.get("monitoring") or {})
    monitoring.pop("window_days", None)
    data["monitoring"] = {**monitoring, "window": window}
    copy = home / Path(path).name
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_spec(copy), str(copy)


class Daemon:
    """``dagster-daemon run`` on the replay's instance, its output in ``<home>/dagster.log``, its PID in
    ``<home>/daemon.pid``. Like a process supervisor (systemd, a Kubernetes Deployment), the replay restarts it when it
    dies, at most ``max_restarts`` times."""

    def __init__(self, home: Path, env: dict[str, str], *, say=print, max_restarts: int = 3):
        self.home, self.env, self.say, self.restarts_left = home, env, say, max_restarts
        self.log_path = home / "dagster.log"
        self.log = open(self.log_path, "ab")
        self._start()

    def _start(self) -> None:
        daemon = Path(sys.executable).with_name("dagster-daemon")
        self.process = subprocess.Popen(
            [str(daemon), "run", "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, env=self.env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        (self.home / "daemon.pid").write_text(str(self.process.pid))

    def check(self) -> None:
        """Restart the daemon if it died (nothing it decided is lost: the lake and Dagster's storage hold the state)."""
        code = self.process.poll()
        if code is None:
            return
        if self.restarts_left <= 0:
            raise RuntimeError(f"dagster-daemon exited with status {code} too often: see {self.log_path}")
        self.restarts_left -= 1
        self.say(f"dagster-daemon exited with status {code}; restarting it, as a supervisor would")
        self._start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _instance_yaml() -> str:
    text = LOCAL_YAML.read_text()
    # queued runs start within a second of their request (default 5 s): a replay is many short hops
    return text + "\nrun_queue:\n  dequeue_interval_seconds: 1\n"


def cmd_replay(args) -> int:
    started = time.monotonic()
    clock = lambda: f"[{int(time.monotonic() - started) // 60:02d}:{int(time.monotonic() - started) % 60:02d}]"  # noqa: E731
    home = Path(args.replay_home or args.home or os.environ.get("AIFLOW_HOME") or ".aiflow").resolve()
    _fresh_home(home)
    spec, spec_path = _spec_for(args.replay_spec or args.spec or os.environ.get("AIFLOW_DATASET") or str(demo_spec_path()), args.window, home)
    name = spec.name
    dagster_home = home / "dagster_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    init_dagster_home(dagster_home, instance_yaml=_instance_yaml(), env=env)  # before the daemon's first runs race on it
    port = args.port or _free_port()
    # the reports' links in the UI open from this server: Dagster signs them, the server checks (aiflow.serving.reports)
    reports_env = {REPORTS_URL_ENV: f"http://127.0.0.1:{port}", REPORT_KEY_ENV: secrets.token_urlsafe(32)}
    (home / "reports.env").write_text("".join(f"{k}={v}\n" for k, v in reports_env.items()))
    (home / "reports.env").chmod(0o600)
    env.update(AIFLOW_HOME=str(home), DAGSTER_HOME=str(dagster_home), AIFLOW_PROFILE="local", AIFLOW_DATASET=spec_path,
               AIFLOW_TICK_SECONDS=str(args.tick), PYTHONUNBUFFERED="1", **reports_env)  # fmt: skip
    os.environ.update(AIFLOW_HOME=str(home))
    lake = Lake(str(home / "lake"))
    zones = {t.name: Path(resolve_uri(t.landing.uri, home)) for t in spec.tables}
    if args.data:
        source = DirectorySource(Path(args.data), spec, zones)  # files placed by their first and last local dates
    elif spec.name == "flights" and Path(spec_path).name == demo_spec_path().name:
        source = DemoSource(zones[spec.name].parent)
    else:
        raise SystemExit(f"aiflow replay: --data is required for '{spec.name}' (only the demo spec brings its own data)")
    first_day, last_day = source.span()
    until = min(args.until or last_day, last_day)
    loop_start = first_day + dt.timedelta(days=args.first_train)
    hint = f"see {home / 'dagster.log'} and `DAGSTER_HOME={dagster_home} dagster dev -w {ROOT / 'workspace.yaml'}`"
    phases: dict[str, float] = {}

    def timed(phase: str, t0: float) -> None:
        phases[phase] = phases.get(phase, 0.0) + time.monotonic() - t0

    # SIGTERM as SIGINT: the daemon and the server (in their own sessions) are stopped by the finally below
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    say(f"{clock()} {name}: landing {first_day} .. {loop_start - dt.timedelta(days=1)} (the first model's {args.first_train} days)")
    source.land(first_day, loop_start - dt.timedelta(days=1))
    daemon = Daemon(home, env, say=lambda m: say(f"{clock()} {m}"))
    server, interrupted = None, False
    say(f"{clock()} dagster-daemon started (sensors every {args.tick} s); it ingests the files and trains the first model")
    try:
        t0 = time.monotonic()
        wait_for(lambda: daemon.check() or ledger_holds(lake, spec, zones), HOP_TIMEOUT, "the landing sensor to ingest the first files", hint)
        wait_for(lambda: daemon.check() or Registry(lake).alias(name, "champion") is not None or watch.first_rejected(lake, name),
                 HOP_TIMEOUT, "the retrain sensor to train and promote the first model", hint)  # fmt: skip
        timed("first model", t0)
        champion = Registry(lake).alias(name, "champion")
        if champion is None:
            say(f"{clock()} the first model failed its gates: nothing to serve ({watch.gate_message(lake, name)}); {hint}")
            return 1
        say(f"{clock()} champion v{champion} serves ({Registry(lake).get(name, champion).family}); starting aiflow serve")
        token = secrets.token_urlsafe(24)
        server = subprocess.Popen(
            [sys.executable, "-m", "aiflow.cli.main", "--spec", spec_path, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--reload-interval", "1", "--log-interval", "0.5"],
            env={**env, "AIFLOW_SERVE_TOKEN": token}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(home / "serve.log", "wb"),
        )  # fmt: skip
        client = Client(f"http://127.0.0.1:{port}", token)
        client.wait_ready(server)
        pending: list[tuple[dt.date, list[dict]]] = []  # (when the labels come back, labels)
        sent, retrains_seen = 0, watch.retrain_windows(lake, name)
        day = loop_start
        while day <= until:
            last = min(day + dt.timedelta(days=args.step - 1), until)
            t0 = time.monotonic()
            source.land(day, last)
            wait_for(lambda last=last: daemon.check() or (ledger_holds(lake, spec, zones) and ingested_through(lake, spec, last)),
                     HOP_TIMEOUT, f"the data plane to build the features of {day} .. {last}", hint)  # fmt: skip
            timed("data plane (daemon)", t0)
            t0 = time.monotonic()
            before = window_status(lake, spec)
            due = [lab for when, labels in pending if when <= last for lab in labels]
            pending = [(w, labels) for w, labels in pending if w > last]
            if due:
                client.feedback(name, due)
            frame = _records(lake, spec, day, last)
            labels = frame[spec.target.name].to_list()
            records = frame.drop(spec.target.name).to_dicts()
            ids = client.predict(name, records)
            sent += len(ids)
            pending.append((last + dt.timedelta(days=args.label_delay), [
                {"request_id": r, "label": float(y)} for r, y in zip(ids, labels, strict=True) if y is not None
            ]))  # fmt: skip
            sent_at = dt.datetime.now(dt.UTC)
            wait_for(lambda sent=sent: watch.logged(lake, name) >= sent, 120, f"the server's inference log to hold {sent} rows", f"see {home / 'serve.log'}")
            timed("scoring and feedback (client)", t0)
            t0 = time.monotonic()
            due_windows = watch.windows_to_decide(before, window_status(lake, spec))
            wait_for(lambda w=due_windows, t=sent_at: daemon.check() or watch.decided(lake, name, w, t), HOP_TIMEOUT,
                     f"monitoring and decisions of window(s) {', '.join(map(str, due_windows))}", hint)  # fmt: skip
            timed("monitoring (daemon)", t0)
            decided = history.read_decisions(lake, name)
            state = f"; window {decided['window_start'][-1]}: {decided['action'][-1]}" if decided.height else ""
            if decided.height and decided["challenger_action"][-1]:  # the challenger judged on this window's live evidence
                state += f"; challenger v{decided['challenger_version'][-1]}: {decided['challenger_action'][-1]}"
            say(f"{clock()} {day} .. {last}: {len(ids):,} scored, {len(due):,} labels back{state}")
            for window, reason in watch.retrain_windows(lake, name).items():
                if window in retrains_seen:
                    continue
                retrains_seen[window] = reason
                t0 = time.monotonic()
                decided_at = watch.decision_time(lake, name, window)
                say(f"{clock()}   window {window}: {_cut(reason, 68)}")
                wait_for(lambda decided_at=decided_at: daemon.check() or watch.evaluated_after(lake, name, decided_at), HOP_TIMEOUT,
                         f"the retrain of window {window} to be evaluated", hint)  # fmt: skip
                version = watch.registered_after(lake, name, decided_at)
                if version is not None:  # promoted at once, the challenger in shadow, or an earlier champion reinstated
                    wait_for(lambda w=window, t=decided_at: watch.outcome_after(lake, name, w, t) is not None, HOP_TIMEOUT,
                             f"the retrain of window {window} to flip an alias", hint)  # fmt: skip
                    ended = watch.outcome_after(lake, name, window, decided_at)
                    serves, alias = (ended["served_version"], "champion") if ended["outcome"] == "reinstated" else (version, ended["alias"])
                    wait_for(lambda v=serves, a=alias: client.serving(name, a) == v, 120, f"the server to load v{serves} as {alias}")
                    said = {"reinstated": f"registered without an alias: earlier champion v{serves} reinstated and serving",
                            "promoted": "promoted and serving"}.get(ended["outcome"], f"the {alias}, scored in shadow: live evidence decides")  # fmt: skip
                    say(f"{clock()}   retrained: v{version} {said}")
                else:
                    say(f"{clock()}   retrain rejected ({_cut(watch.gate_message(lake, name), 50)}): v{Registry(lake).alias(name, 'champion')} serves on")
                timed("retraining (daemon)", t0)
            day = last + dt.timedelta(days=1)
    except ReplayTimeout as exc:
        say(f"{clock()} aiflow replay: {exc}")
        return 1
    except KeyboardInterrupt:
        say(f"{clock()} aiflow replay: interrupted; stopping the server and the daemon")
        interrupted = True
        return 130
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if not interrupted:
            _let_runs_finish(lake, spec, daemon)
        daemon.stop()
    table = summary(lake, spec)
    say("")
    say(render(table, spec))
    png = Path(args.png) if args.png else home / "replay.png"
    chart(table, spec, png)
    retrains = int((table["decision"] == "retrain").sum()) if "decision" in table.columns else 0
    say("")
    say("time by phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    say(f"{table.height} windows monitored, {retrains} retrain(s) decided, {clock()[1:-1]} in all. Chart: {png}")
    say(f"Decisions with their full reasons: {lake.uri(history.decisions_table(name))} (Polars: pl.read_delta(...)); Dagster's log: {home / 'dagster.log'}")
    say(f"The same runs in the UI: DAGSTER_HOME={dagster_home} AIFLOW_HOME={home} AIFLOW_DATASET={spec_path} dagster dev -w {ROOT / 'workspace.yaml'}")
    say(f"Its report links open while aiflow serve runs on port {port} with the variables in {home / 'reports.env'} (and a token).")
    return 0


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _records(lake: Lake, spec: DatasetSpec, first: dt.date, last: dt.date) -> pl.DataFrame:
    """The step's rows as the application sends them (the raw columns the server takes, side values joined as the spec
    says) with their target, which comes back later as the label; event times as ISO-8601 text."""
    # the step's dates are the dataset's calendar days (as its files and its monitoring windows are); event_date is UTC
    silver = lake.scan(Tables.silver(spec.name)).filter(
        pl.col(EVENT_DATE).is_between(first - dt.timedelta(days=1), last + dt.timedelta(days=1)) & (local_date(spec).is_between(first, last))
    )
    sides = {j.table: lake.scan(Tables.silver(j.table)) for j in spec.joins}
    frame = serving_rows(silver, sides, spec)
    event = frame[spec.event_time]
    if isinstance(event.dtype, pl.Datetime):
        text = (event.dt.convert_time_zone("UTC") if event.dtype.time_zone else event).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        frame = frame.with_columns(text.alias(spec.event_time))
    elif event.dtype == pl.Date:
        frame = frame.with_columns(event.dt.strftime("%Y-%m-%d").alias(spec.event_time))
    return frame


def local_date(spec: DatasetSpec) -> pl.Expr:
    """The event's date in the dataset's timezone (Polars expression on a silver or features table)."""
    event = pl.col(spec.event_time)
    if spec.columns[spec.event_time].type == "datetime":
        return event.dt.convert_time_zone(spec.timezone).dt.date()
    return event.cast(pl.Date)


def _let_runs_finish(lake: Lake, spec: DatasetSpec, daemon: Daemon, timeout: float = 60) -> None:
    """Give the daemon's last hop (scoring the final step's features, automation) a moment before it stops."""
    predictions, features = Tables.predictions(spec.name), Tables.features(spec.name)

    def scored() -> bool:
        if daemon.process.poll() is not None or not lake.exists(features):
            return True
        newest = lake.scan(features).select(pl.col(EVENT_DATE).max()).collect().item()
        done = lake.scan(predictions).select(pl.col(EVENT_DATE).max()).collect().item() if lake.exists(predictions) else None
        return done is not None and done >= newest

    try:
        wait_for(scored, timeout, "the last batch predictions")
    except ReplayTimeout:
        pass  # the daemon stops anyway; its run log says where it was
