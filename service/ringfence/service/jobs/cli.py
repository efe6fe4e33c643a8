"""The batch subcommands of ``ringfence``: ``recluster``, ``export-events`` and ``report``.
Settings come from the same defaults < ``--config`` TOML < ``RINGFENCE_*`` env < flags as
``serve``; a problem with the input ends the command with a one-line message and exit code 2
(1 when a server the job needs is unreachable)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

COMMANDS = frozenset({"recluster", "export-events", "report"})
log = logging.getLogger("ringfence.jobs")


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file, as for serve")
    p.add_argument("--data-dir", type=Path, help="the service's data directory (events.db, "
                                                 "hash.key, models/, state.db)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--events-db", type=Path,
                     help="SQLite event log (default: DATA_DIR/events.db, or PostgreSQL when "
                          "RINGFENCE_EVENT_LOG=postgres)")
    src.add_argument("--parquet", action="append", metavar="URL",
                     help="Parquet file, directory or glob, local or any fsspec URL "
                          "(repeatable); columns are ScoredEvent fields")
    src.add_argument("--postgres", action="store_true",
                     help="the PostgreSQL event log of RINGFENCE_POSTGRES_DSN / _SCHEMA")
    p.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                   help="a progress bar (default on a terminal) or log lines")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rc = sub.add_parser(
        "recluster", help="re-fit the account clusters over the event log and publish the "
                          "model to the model directory (docs/recluster.md)",
        description="Rebuilds account profiles from the event log with the service's own "
                    "code, fits HDBSCAN on the driver and publishes a model artifact that "
                    "running servers load (poll or ReloadModel). Re-running on unchanged "
                    "events publishes nothing; an interrupted run resumes.")
    _source_options(rc)
    rc.add_argument("--since", default="45d", help="window start: a span back from --until "
                                                   "(45d, 12h, 2w) or an ISO date (default 45d)")
    rc.add_argument("--until", help="window end, ISO date/time or epoch seconds (default: the "
                                    "newest event in the log)")
    rc.add_argument("--engine", choices=["embedded", "dask"], default="embedded",
                    help="embedded: this process (default); dask: partitions as dask tasks")
    rc.add_argument("--scheduler", help="dask scheduler address (tcp://host:8786); without "
                                        "it --engine dask starts a local cluster")
    rc.add_argument("--workers", type=int,
                    help="embedded: worker processes aggregating partitions (default: the "
                         "cores this process may use, e.g. under taskset); dask: workers of "
                         "the local cluster (default 2), or with --scheduler the parallelism "
                         "the default --partitions plans for")
    rc.add_argument("--partitions", type=int, help="account partitions (default: one per "
                                                   "million events, at least two per worker)")
    rc.add_argument("--model-dir", type=Path, help="publish here (default: RINGFENCE_MODEL_DIR "
                                                   "or DATA_DIR/models)")
    rc.add_argument("--work-dir", type=Path, help="partition results for resuming (default "
                                                  "DATA_DIR/recluster-work)")
    rc.add_argument("--report", type=Path, metavar="PATH.html", help="write the cluster report")
    rc.add_argument("--fit-jobs", type=int, help="HDBSCAN core-distance threads (default: "
                                                 "the usable cores, at most 4)")
    rc.add_argument("--force", action="store_true", help="fit and publish even if these "
                                                         "inputs were published already")
    rc.add_argument("--ignore-previous", action="store_true",
                    help="fit without the latest published model (cluster ids start afresh)")
    rc.add_argument("--keep-work", action="store_true",
                    help="keep the partition results after publishing")

    ex = sub.add_parser("export-events", help="write the event log as Parquet")
    _source_options(ex)
    ex.add_argument("--to", choices=["parquet"], default="parquet", help="output format")
    ex.add_argument("--out", required=True, metavar="URL",
                    help="output file, local path or fsspec URL (s3://bucket/events.parquet)")
    ex.add_argument("--since", help="first event time: ISO date/time, epoch seconds, or a "
                                    "span back from --until (default: everything)")
    ex.add_argument("--until", help="last event time (default: the newest event)")

    rp = sub.add_parser("report", help="reports over the event log")
    kinds = rp.add_subparsers(dest="report", required=True)
    au = kinds.add_parser("audit", help="the monthly usage and protection audit (JSON + HTML)")
    _source_options(au)
    au.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    au.add_argument("--model-dir", type=Path, help="where the published model is (default: "
                                                   "RINGFENCE_MODEL_DIR or DATA_DIR/models)")
    au.add_argument("--out", type=Path, default=Path("."),
                    help="directory for audit-YYYY-MM.json and .html (default: .)")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ringfence.service import logs
    from ringfence.service.jobs import JobError
    from ringfence.service.settings import Settings

    name = args.command if args.command != "report" else f"report {args.report}"
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "model_dir", None) is not None:
        overrides["model_dir"] = args.model_dir
    try:
        settings = Settings.load(args.config, **overrides)
    except (ValidationError, OSError, ValueError) as exc:
        print(f"ringfence {name}: invalid settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command == "recluster":
            return _recluster(args, settings)
        if args.command == "export-events":
            return _export(args, settings)
        return _audit(args, settings)
    except JobError as exc:
        print(f"ringfence {name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ringfence {name}: interrupted (a re-run resumes)", file=sys.stderr)
        return 130


def _bar(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "bar": True, "lines": False}[args.progress]


def open_source(args: argparse.Namespace, settings: Any) -> Any:
    from ringfence.service.jobs.sources import ParquetSource, PostgresSource, SqliteSource

    if args.parquet:
        return ParquetSource(tuple(args.parquet))
    if args.events_db is not None:
        return SqliteSource(args.events_db)
    if args.postgres or settings.event_log == "postgres":
        if settings.postgres_dsn is None:
            from ringfence.service.jobs import JobError

            raise JobError("--postgres needs RINGFENCE_POSTGRES_DSN (or postgres_dsn in "
                           "--config)")
        return PostgresSource(settings.postgres_dsn.get_secret_value(),
                              settings.postgres_schema)
    return SqliteSource(settings.data_dir / "events.db")


def _recluster(args: argparse.Namespace, settings: Any) -> int:
    from ringfence.service.jobs.engines import DaskEngine, EmbeddedEngine, Engine
    from ringfence.service.jobs.recluster import ReclusterOptions, recluster

    if args.workers is not None and args.workers < 1:
        from ringfence.service.jobs import JobError

        raise JobError(f"--workers must be at least 1, not {args.workers}")
    engine: Engine = (DaskEngine(args.scheduler, args.workers or 2) if args.engine == "dask"
                      else EmbeddedEngine(args.workers))
    options = ReclusterOptions(
        since=args.since, until=args.until, partitions=args.partitions,
        work_dir=args.work_dir, report=args.report, force=args.force,
        ignore_previous=args.ignore_previous, keep_work=args.keep_work,
        fit_jobs=args.fit_jobs, progress_bar=_bar(args))
    result = recluster(settings, open_source(args, settings), options, engine)
    print(result.summary())
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


def _export(args: argparse.Namespace, settings: Any) -> int:
    from ringfence.service.jobs.export import export_parquet
    from ringfence.service.jobs.window import resolve

    source = open_source(args, settings)
    window = None
    if args.since is not None or args.until is not None:
        window = resolve(args.since or "36500d", args.until, source.newest())
    result = export_parquet(source, args.out, window, progress_bar=_bar(args))
    print(f"exported {result.events:,} events to {result.url}")
    return 0


def _audit(args: argparse.Namespace, settings: Any) -> int:
    from ringfence.service.jobs.audit import audit, write_audit

    report = audit(open_source(args, settings), args.month, settings)
    files = write_audit(report, args.out / f"audit-{args.month}.json",
                        args.out / f"audit-{args.month}.html")
    print(f"audit {args.month}: {report['usage']['requests']:,} requests, "
          f"{report['flagged_accounts']['count']:,} accounts flagged, "
          f"{len(report['clusters']['flagged'])} clusters flagged → {files.json_path}, "
          f"{files.html_path}")
    return 0
