"""``ringfence export-events --to parquet``: the event log as a Parquet file whose columns are
the ``ScoredEvent`` fields — the input ``recluster --parquet`` and ``report audit --parquet``
read, e.g. from object storage for a dask cluster.

Types: times and scores float64, counts int64, flags bool, ``reasons`` list<string>,
``content_signature`` int64 holding the unsigned signature's bit pattern (as the SQLite and
PostgreSQL logs do). Rows are in event-time order, zstd-compressed, in row groups of
``ROW_GROUP`` events. A local file appears only when complete (temp file + rename).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.service.jobs import JobError
from ringfence.service.jobs.progress import Progress
from ringfence.service.jobs.sources import FIELD_TYPES, FIELDS, EventSource, Row
from ringfence.service.jobs.window import Window

ROW_GROUP = 500_000


@dataclass(frozen=True, slots=True)
class ExportResult:
    url: str
    events: int
    window: Window | None


def arrow_schema() -> Any:
    import pyarrow as pa

    kinds = {"float": pa.float64(), "float | None": pa.float64(), "str": pa.string(),
             "int": pa.int64(), "int | None": pa.int64(), "bool": pa.bool_(),
             "tuple[str, ...]": pa.list_(pa.string())}
    return pa.schema([pa.field(name, kinds[FIELD_TYPES[name]]) for name in FIELDS])


def _table(rows: list[Row], schema: Any) -> Any:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in FIELDS]
    arrays = []
    for name, values in zip(FIELDS, columns, strict=True):
        kind = FIELD_TYPES[name]
        if kind == "bool":
            values = [bool(v) for v in values]
        elif name == "content_signature":
            values = [v - (1 << 64) if v is not None and v >= 1 << 63 else v for v in values]
        elif kind == "tuple[str, ...]":
            values = [list(v) if v else [] for v in values]
        arrays.append(pa.array(values, type=schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


@contextlib.contextmanager
def _output(url: str) -> Iterator[Any]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        with fs.open(path, "wb") as f:
            yield f


def export_parquet(source: EventSource, url: str, window: Window | None,
                   progress_bar: bool | None = None) -> ExportResult:
    import pyarrow.parquet as pq

    since, until = (window.since, window.until) if window else (float("-inf"), float("inf"))
    schema = arrow_schema()
    written = 0
    progress = Progress("export", 0, bar=progress_bar)
    try:
        with _output(url) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
            pending: list[Row] = []
            for rows in source.read_events(since, until):
                pending.extend(rows)
                if len(pending) >= ROW_GROUP:
                    writer.write_table(_table(pending, schema), row_group_size=ROW_GROUP)
                    written += len(pending)
                    progress.advance(len(pending))
                    pending = []
            if pending or not written:
                writer.write_table(_table(pending, schema), row_group_size=ROW_GROUP)
                written += len(pending)
                progress.advance(len(pending))
    except OSError as exc:
        raise JobError(f"cannot write {url}: {exc}") from None
    finally:
        progress.close()
    return ExportResult(url=url, events=written, window=window)
