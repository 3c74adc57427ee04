"""`fink-spark cone` as a user runs it, against brute force: real ZTF alerts replicated with
new ids and moved (every copy of a position moved alike) across ra = 0/360, to both poles
and around the equator, reprocessed into an Iceberg table, then searched without Spark."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import fastavro
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import sample
from pyspark.sql import SparkSession

from fink_spark.cli import main
from fink_spark.cli.sky import add_arguments, run
from fink_spark.config.job import parse_config
from fink_spark.errors import ConfigError
from fink_spark.run.reprocess import reprocess
from fink_spark.surveys import ZTF
from fink_spark.table.warehouse import load_pyiceberg
from fink_spark.testing.publisher import _with_value, read_saved_alerts, replicate
from fink_spark.view.sky import Cone

# Where the replicas go: around (0, 10) on both sides of ra 0, around each pole, around (180, 0)
CENTRES = [(0.0, 10.0), (0.0, 90.0), (0.0, -90.0), (180.0, 0.0)]
OFFSETS_ARCSEC = [0.5, 3, 20, 100, 900, 3600, 20000]


@pytest.fixture(scope="module")
def moved(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, tuple[float, float]]]:
    """The warehouse, and each alert's position by candid."""
    folder = tmp_path_factory.mktemp("sky")
    saved = next(read_saved_alerts([sample("ztf-0p2")]))
    positions, records, copy = {}, [], 0
    rng = np.random.default_rng(36)
    for ra0, dec0 in CENTRES:
        for offset in OFFSETS_ARCSEC:
            for sign in (1, -1):
                copy += 1
                base = replicate(saved.records[copy % len(saved.records)], ZTF, copy)
                angle = rng.uniform(0, 2 * np.pi)
                dec = float(np.clip(dec0 + sign * offset / 3600 * np.sin(angle), -90, 90))
                ra = float((ra0 + sign * offset / 3600 * np.cos(angle)) % 360)
                record = _with_value(_with_value(base, "candidate.ra", ra), "candidate.dec", dec)
                records.append(record)
                positions[record["candid"]] = (ra, dec)
    with (folder / "moved.avro").open("wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(json.loads(saved.schema_text)), records)
    warehouse = folder / "warehouse"
    config = parse_config({"survey": "ztf", "output": {"table": {"path": str(warehouse), "checkpoint": str(folder / "chk")}}},
                          kafka_required=False)
    assert reprocess(spark, config, [str(folder / "moved.avro")], [], "fink_sky_ztf") == len(records)
    return warehouse, positions


def brute_force(positions: dict[int, tuple[float, float]], cone: Cone) -> list[int]:
    ids = list(positions)
    ra, dec = np.array([positions[i][0] for i in ids]), np.array([positions[i][1] for i in ids])
    return sorted(i for i, separation in zip(ids, cone.separations(ra, dec)) if separation <= cone.radius)


def cone(warehouse: Path, *flags: str) -> str:
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args(["--output", str(warehouse), *flags]), out)
    return out.getvalue()


@pytest.mark.parametrize(("ra", "dec", "radius"), [
    (0.0, 10.0, 1.0), (0.0, 10.0, 30.0), (359.999, 10.0, 120.0), (0.0, 10.0, 36000.0),  # across ra 0/360, 1" to 10 deg
    (0.0, 90.0, 30.0), (123.0, 89.99, 3600.0), (0.0, -90.0, 1000.0),  # the poles
    (180.0, 0.0, 3600.0), (90.0, 45.0, 30.0),  # a cone that holds nothing
])
def test_cone_returns_exactly_the_alerts_within_the_radius(moved, ra: float, dec: float, radius: float) -> None:  # noqa: ANN001
    warehouse, positions = moved
    want = brute_force(positions, Cone(ra, dec, radius))
    target = Path(warehouse).parent / f"cone_{ra}_{dec}_{radius}.csv"
    printed = cone(warehouse, "--ra", str(ra), "--dec", str(dec), "--radius", str(radius), "--to", str(target))
    assert printed.startswith(f"({len(want)} alerts within {radius:g} arcsec of ra {ra:g}, dec {dec:g}, written to")
    with target.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(row["candid"]) for row in rows) == want
    separations = [float(row["separation_arcsec"]) for row in rows]
    assert separations == sorted(separations) and all(value <= radius for value in separations)


def test_the_table_keeps_positions_sorted_and_indexed_and_cone_plans_few_files(moved) -> None:  # noqa: ANN001
    warehouse, positions = moved
    table = load_pyiceberg(str(warehouse))
    assert str(table.sort_order().fields[0].transform) == "identity"
    assert table.schema().find_column_name(table.sort_order().fields[0].source_id) == "_healpix_29"
    assert table.properties["write.metadata.metrics.column._healpix_29"] == "full"
    files = list(table.scan().plan_files())
    for task in files:  # each file's rows in HEALPix order
        cells = pq.read_table(task.file.file_path.removeprefix("file:"), columns=["_healpix_29"])["_healpix_29"].to_pylist()
        assert cells == sorted(cells)
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan, Or

    ranges = Cone(0.0, 90.0, 30.0).ranges()
    planned = list(table.scan(row_filter=Or(*[And(GreaterThanOrEqual("_healpix_29", low), LessThan("_healpix_29", high))
                                              for low, high in ranges]) if len(ranges) > 1 else
                              And(GreaterThanOrEqual("_healpix_29", ranges[0][0]), LessThan("_healpix_29", ranges[0][1]))
                              ).plan_files())
    assert len(planned) <= len(files)
    printed = cone(warehouse, "--ra", "0", "--dec", "90", "--radius", "30", "--columns", "candidate.magpsf")
    lines = printed.splitlines()
    assert [label.strip() for label in lines[0].split(" | ")] == [
        "candid", "objectId", "ra", "dec", "obs_time", "topic", "candidate.magpsf", "separation_arcsec"]
    near = brute_force(positions, Cone(0.0, 90.0, 30.0))
    assert sorted(int(line.split(" | ")[0]) for line in lines[1:-1]) == near  # the header, the rows, the count


def test_the_python_api_gives_the_same_cone_as_arrow(moved) -> None:  # noqa: ANN001
    import fink_spark

    warehouse, positions = moved
    near = fink_spark.cone(str(warehouse), 359.999, 10.0, 120.0, columns=["candid"])
    assert sorted(near["candid"].to_pylist()) == brute_force(positions, Cone(359.999, 10.0, 120.0))
    assert near["separation_arcsec"].to_pylist() == sorted(near["separation_arcsec"].to_pylist())


def test_bad_cone_arguments_are_clear_errors(moved, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    warehouse, _ = moved
    with pytest.raises(ConfigError, match=r"--dec must be within \[-90, 90\] degrees, not 91"):
        cone(warehouse, "--ra", "0", "--dec", "91", "--radius", "3")
    with pytest.raises(ConfigError, match="--radius must be a positive number of arcsec"):
        cone(warehouse, "--ra", "0", "--dec", "0", "--radius", "-3")
    with pytest.raises(ConfigError, match="--since must be a time such as"):
        cone(warehouse, "--ra", "0", "--dec", "0", "--radius", "3", "--since", "yesterday")
    with pytest.raises(SystemExit) as stopped:  # as the command line says it
        main(["cone", "--output", str(warehouse), "--ra", "0", "--dec", "0", "--radius", "3", "--to", "near.txt"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "fink-spark: --to near.txt: give a file ending in .parquet or .csv.\n"
