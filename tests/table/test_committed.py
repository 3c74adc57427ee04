"""Which files of an output count, read without Spark, agree with Spark's own reading of
the sink's log: compacted batches, later batches, and files no batch committed."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from fink_spark.errors import ConfigError
from fink_spark.table.committed import committed_files, read_committed


def write_part(root: Path, night: str, name: str, rows: dict) -> Path:
    folder = root / night
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), folder / name)
    return folder / name


def write_log(root: Path, batch: str, files: list[Path]) -> None:
    log = root / "_spark_metadata"
    log.mkdir(exist_ok=True)
    entries = [  # as Spark writes them: a file URI with "=" not escaped, and the size Spark will read
        {"path": f"file://{file}", "size": file.stat().st_size if file.exists() else 1, "isDir": False,
         "modificationTime": 0, "blockReplication": 1, "blockSize": 33554432, "action": "add"}
        for file in files
    ]
    (log / batch).write_text("\n".join(["v1", *[json.dumps(entry) for entry in entries]]))


def test_committed_files_agree_with_spark(spark: SparkSession, tmp_path: Path) -> None:
    night = "year=2026/month=3/day=22"
    early = write_part(tmp_path, night, "part-0.parquet", {"candid": pa.array([1, 2], pa.int32())})
    middle = write_part(tmp_path, "year=2026/month=3/day=23", "part-1.parquet", {"candid": pa.array([3], pa.int32())})
    late = write_part(tmp_path, night, "part-2.parquet", {"candid": pa.array([4], pa.int64()), "extra": ["x"]})
    write_part(tmp_path, night, "part-3-crashed.parquet", {"candid": pa.array([99], pa.int64())})
    write_log(tmp_path, "8", [early])  # superseded by the compact file, as Spark leaves it
    write_log(tmp_path, "9.compact", [early, middle])
    write_log(tmp_path, "10", [late])

    files = committed_files(tmp_path)
    assert files == [early, middle, late]
    read_by_spark = spark.read.parquet(str(tmp_path)).inputFiles()
    assert sorted(Path(unquote(urlparse(uri).path)) for uri in read_by_spark) == sorted(files)

    table = read_committed(tmp_path)
    assert sorted(table.to_pylist(), key=lambda row: row["candid"]) == [
        {"candid": 1, "year": 2026, "month": 3, "day": 22, "extra": None},
        {"candid": 2, "year": 2026, "month": 3, "day": 22, "extra": None},
        {"candid": 3, "year": 2026, "month": 3, "day": 23, "extra": None},
        {"candid": 4, "year": 2026, "month": 3, "day": 22, "extra": "x"},
    ]
    one_night = read_committed(tmp_path, ["candid"], partitions=lambda values: values["day"] == 23)
    assert one_night.to_pylist() == [{"candid": 3, "year": 2026, "month": 3, "day": 23}]


def test_a_folder_without_log_counts_its_files_and_a_moved_output_is_a_clear_error(tmp_path: Path) -> None:
    plain = write_part(tmp_path / "plain", "year=2026/month=3/day=22", "part-0.parquet", {"candid": [1]})
    (tmp_path / "plain" / "_temporary").mkdir()
    pq.write_table(pa.table({"candid": [2]}), tmp_path / "plain" / "_temporary" / "part-9.parquet")
    assert committed_files(tmp_path / "plain") == [plain]

    written = write_part(tmp_path / "moved", "", "part-0.parquet", {"candid": [1]})
    write_log(tmp_path / "moved", "0", [written.with_name("elsewhere.parquet")])
    with pytest.raises(ConfigError, match=r"elsewhere.parquet is listed as committed in .* but is missing"):
        committed_files(tmp_path / "moved")
    with pytest.raises(ConfigError, match="is not a local folder"):
        committed_files(tmp_path / "nothing")
