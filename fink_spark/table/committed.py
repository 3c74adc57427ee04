"""A job's Parquet output read without Spark: only the files its sink committed, with pyarrow.

Spark's streaming file sink lists each batch's files in `<path>/_spark_metadata/<batch>`
once they are all written (every tenth batch a `<batch>.compact` file lists everything
so far); a file of a batch interrupted by a crash is in no list and must not be read.
A folder without that log (written by plain `DataFrame.write`) counts all its files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from fink_spark.errors import ConfigError
from fink_spark.state import SINK_LOG, sink_log_batches

RowMask = Callable[[pa.Table], "pa.ChunkedArray | pa.Array | None"]


def _log_entries(log: Path) -> list[dict]:
    """The entries of the newest compact file and of the batches after it."""
    batches = sink_log_batches(p.name for p in log.iterdir())
    start = max((batch for batch, name in batches.items() if name.endswith(".compact")), default=0)
    entries = []
    for batch in sorted(b for b in batches if b >= start):
        lines = (log / batches[batch]).read_text().splitlines()
        entries += [json.loads(line) for line in lines[1:] if line.strip()]
    return entries


def committed_files(path: str | Path) -> list[Path]:
    """The Parquet files of an output that count, in commit order."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise ConfigError(f"{path} is not a local folder: give the `output.table.path` of a fink-spark job (output.format parquet) "
                          "(an output on HDFS or S3 is read with Spark: fink_spark.read_table).")
    log = root / SINK_LOG
    if not log.is_dir():
        return sorted(p for p in root.rglob("*.parquet") if not any(part[0] in "._" for part in p.relative_to(root).parts))
    files: dict[str, Path] = {}
    for entry in _log_entries(log):
        local = Path(unquote(urlparse(entry["path"]).path))
        if entry.get("action") == "delete":
            files.pop(str(local), None)
        else:
            files[str(local)] = local
    missing = [file for file in files.values() if not file.is_file()]
    if missing:
        raise ConfigError(f"{missing[0]} is listed as committed in {log} but is missing ({len(missing)} such files): "
                          "an output folder cannot be moved, since Spark's log names its files by full path.")
    return list(files.values())


def partition_values(root: Path, file: Path) -> dict[str, object]:
    """The `name=value` folders between the output's root and a file (year, month, day)."""
    values: dict[str, object] = {}
    for part in file.parent.relative_to(root).parts if file.is_relative_to(root) else ():
        name, equals, value = part.partition("=")
        if equals:
            text = unquote(value)
            values[name] = int(text) if text.lstrip("-").isdigit() else text
    return values


def read_committed(path: str | Path, columns: list[str] | None = None, rows: RowMask | None = None,
                   partitions: Callable[[dict[str, object]], bool] | None = None,
                   files: list[Path] | None = None) -> pa.Table:
    """The committed rows of an output as one Arrow table.

    `columns` names top-level columns (all by default; partition columns always come),
    `partitions` keeps a file by its partition values, `rows` gives each file's table a
    mask of the rows to keep; `files`, the committed files when already listed. Files
    written with older schemas lack some columns: the tables are merged with nulls for
    them, and int/float columns widened (pyarrow's promotion; the files' types differ only
    by the table's own widenings, `table_schema.WIDENINGS`).
    """
    root = Path(path).resolve()
    tables = []
    for file in committed_files(root) if files is None else files:
        partition = partition_values(root, file)
        if partitions is not None and not partitions(partition):
            continue
        parquet = pq.ParquetFile(file)
        present = parquet.schema_arrow.names
        table = parquet.read(columns=[c for c in columns if c in present] if columns is not None else None)
        for name, value in partition.items():
            if name not in table.column_names:
                table = table.append_column(name, pa.array([value] * table.num_rows))
        if rows is not None and table.num_rows:
            mask = rows(table)
            if mask is not None:
                table = table.filter(mask)
        if table.num_rows:
            tables.append(table)
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")
