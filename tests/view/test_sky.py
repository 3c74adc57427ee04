"""`fink-spark cone`, `fink-spark xmatch` and the watchlist filter as a user runs them, against
brute force: real ZTF alerts replicated with new ids and moved (every copy of a position
moved alike) across ra = 0/360, to both poles and around the equator, reprocessed into an
Iceberg table, then searched (the cone without Spark), cross-matched with a catalog, and
reprocessed again through a watchlist of that catalog into Parquet."""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import sample
from pyspark.sql import SparkSession

from fink_spark.cli import main
from fink_spark.cli.sky import add_arguments, add_xmatch_arguments, run, run_xmatch
from fink_spark.config.job import effective_config, parse_config
from fink_spark.errors import ConfigError
from fink_spark.run.reprocess import reprocess
from fink_spark.surveys import ZTF
from fink_spark.table.committed import read_committed
from fink_spark.table.warehouse import load_pyiceberg
from fink_spark.testing.publisher import _with_value, read_saved_alerts, replicate
from fink_spark.transform.filters import parse_filters
from fink_spark.view.sky import Cone

# Where the replicas go: around (0, 10) on both sides of ra 0, around each pole, around (180, 0)
CENTRES = [(0.0, 10.0), (0.0, 90.0), (0.0, -90.0), (180.0, 0.0)]
OFFSETS_ARCSEC = [0.5, 3, 20, 100, 900, 3600, 20000]


@dataclass(frozen=True)
class Sky:
    warehouse: Path
    positions: dict[int, tuple[float, float]]  # by candid
    alerts: Path  # the moved alerts, one Avro file


@pytest.fixture(scope="module")
def moved(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Sky:
    """The moved alerts reprocessed into a warehouse."""
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
    return Sky(warehouse, positions, folder / "moved.avro")


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
    warehouse, positions = moved.warehouse, moved.positions
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
    warehouse, positions = moved.warehouse, moved.positions
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

    warehouse, positions = moved.warehouse, moved.positions
    near = fink_spark.cone(str(warehouse), 359.999, 10.0, 120.0, columns=["candid"])
    assert sorted(near["candid"].to_pylist()) == brute_force(positions, Cone(359.999, 10.0, 120.0))
    assert near["separation_arcsec"].to_pylist() == sorted(near["separation_arcsec"].to_pylist())


def test_the_cone_read_by_spark_is_the_same(spark: SparkSession, moved: Sky) -> None:  # noqa: ARG001 - its session
    import fink_spark

    for ra, dec, radius in ((359.999, 10.0, 120.0), (0.0, -90.0, 1000.0), (0.0, 10.0, 36000.0)):
        alone = fink_spark.cone(str(moved.warehouse), ra, dec, radius, columns=["candid"])
        with_spark = fink_spark.cone(str(moved.warehouse), ra, dec, radius, columns=["candid"], spark=spark)
        assert with_spark.to_pylist() == alone.to_pylist() and alone.num_rows > 0
    every = cone(moved.warehouse, "--ra", "0", "--dec", "10", "--radius", "36000", "--spark").splitlines()
    times = sorted(line.split(" | ")[4].strip() for line in every[1:-1])
    middle = times[len(times) // 2]
    later = cone(moved.warehouse, "--ra", "0", "--dec", "10", "--radius", "36000", "--spark", "--since", middle)
    earlier = cone(moved.warehouse, "--ra", "0", "--dec", "10", "--radius", "36000", "--spark", "--until", middle)
    assert sorted(line.split(" | ")[4].strip() for line in [*later.splitlines()[1:-1], *earlier.splitlines()[1:-1]]) == times
    assert later.splitlines()[-1].startswith(f"({sum(time >= middle for time in times)} alerts within")


def test_bad_cone_arguments_are_clear_errors(moved, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    warehouse = moved.warehouse
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


# A catalog of targets at each centre: at 0, 10", 200" and 2000"; a twin of the centre's
# (another target at the same place: an alert near it matches both); an id used twice.
TARGET_OFFSETS_ARCSEC = [0, 10, 200, 2000]


@pytest.fixture(scope="module")
def catalog(moved: Sky) -> Path:
    rng = np.random.default_rng(37)
    rows = []
    for number, (ra0, dec0) in enumerate(CENTRES):
        for offset in TARGET_OFFSETS_ARCSEC:
            angle = rng.uniform(0, 2 * np.pi)
            dec = float(np.clip(dec0 + offset / 3600 * np.sin(angle), -90, 90))
            rows.append({"name": f"T{number}-{offset}", "ra_deg": (ra0 + offset / 3600 * np.cos(angle)) % 360,
                         "dec_deg": dec, "kind": "galaxy" if offset else "grb"})
        rows.append({**rows[-len(TARGET_OFFSETS_ARCSEC)], "name": f"T{number}-twin"})
    rows.append({**rows[1], "name": "T-same"})
    rows.append({**rows[7], "name": "T-same"})
    path = moved.warehouse.parent / "targets.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def brute_force_pairs(positions: dict[int, tuple[float, float]], catalog: Path, radius: float) -> list[tuple[str, int, float]]:
    """(target, candid, separation) of every pair within the radius, sorted."""
    with catalog.open() as handle:
        targets = list(csv.DictReader(handle))
    ids = list(positions)
    ra, dec = np.array([positions[i][0] for i in ids]), np.array([positions[i][1] for i in ids])
    pairs = []
    for target in targets:
        separations = Cone(float(target["ra_deg"]), float(target["dec_deg"]), radius).separations(ra, dec)
        pairs += [(target["name"], candid, float(value)) for candid, value in zip(ids, separations) if value <= radius]
    return sorted(pairs)


def same_pairs(got: list[tuple[str, int, float]], want: list[tuple[str, int, float]]) -> bool:
    """The same pairs, each as many times (a repeated id), at the same separation to a µas."""
    got, want = sorted(got), sorted(want)
    return [pair[:2] for pair in got] == [pair[:2] for pair in want] and all(
        abs(mine[2] - theirs[2]) < 1e-6 for mine, theirs in zip(got, want))


def xmatch(warehouse: Path, catalog: Path, *flags: str) -> str:
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    add_xmatch_arguments(parser)
    run_xmatch(parser.parse_args(["--output", str(warehouse), "--catalog", str(catalog), "--ra-column", "ra_deg",
                                  "--dec-column", "dec_deg", *flags]), out)
    return out.getvalue()


@pytest.mark.parametrize("radius", [1.0, 30.0, 3600.0, 36000.0])
def test_xmatch_gives_every_pair_within_the_radius(moved: Sky, catalog: Path, radius: float) -> None:
    want = brute_force_pairs(moved.positions, catalog, radius)
    target = moved.warehouse.parent / f"pairs_{radius}.parquet"
    printed = xmatch(moved.warehouse, catalog, "--radius", str(radius), "--to", str(target))
    assert printed == f"({len(want)} pairs of 22 targets and alerts within {radius:g} arcsec, written to {target})\n"
    pairs = pq.read_table(target)
    assert pairs.column_names == ["target_name", "target_ra_deg", "target_dec_deg", "target_kind", "candid", "objectId",
                                  "obs_time", "topic", "ra", "dec", "separation_arcsec"]
    rows = pairs.to_pylist()
    assert same_pairs([(row["target_name"], row["candid"], row["separation_arcsec"]) for row in rows], want)
    with catalog.open() as handle:  # by target, in the catalog's order, nearest first
        place = {(row["name"], float(row["ra_deg"])): number for number, row in enumerate(csv.DictReader(handle))}
    order = [(place[(row["target_name"], row["target_ra_deg"])], row["separation_arcsec"]) for row in rows]
    assert order == sorted(order)


def test_xmatch_prints_the_pairs_with_the_alerts_columns_asked_for(moved: Sky, catalog: Path) -> None:
    printed = xmatch(moved.warehouse, catalog, "--radius", "30", "--columns", "candid,candidate.magpsf").splitlines()
    assert [label.strip() for label in printed[0].split(" | ")] == [
        "target_name", "target_ra_deg", "target_dec_deg", "target_kind", "candid", "candidate_magpsf", "ra", "dec",
        "separation_arcsec"]
    want = brute_force_pairs(moved.positions, catalog, 30.0)
    assert len(want) > 50 and printed[-1] == (f"({len(want)} pairs of 22 targets and alerts within 30 arcsec, "
                                              "the first 50 shown; --to FILE writes them all)")
    shown = [(line.split(" | ")[0].strip(), int(line.split(" | ")[4])) for line in printed[1:-1]]
    assert len(shown) == 50 and set(shown) <= {(name, candid) for name, candid, _ in want}


@pytest.fixture(scope="module")
def watched(spark: SparkSession, moved: Sky, catalog: Path) -> Path:
    """The moved alerts reprocessed through a watchlist of the catalog, into Parquet."""
    folder = moved.warehouse.parent / "watched"
    watching = {"preset": "watchlist", "catalog": str(catalog), "radius": 3600, "id_column": "name", "ra_column": "ra_deg",
                "dec_column": "dec_deg"}
    config_data = {"survey": "ztf", "output": {"format": "parquet", "table": {
        "path": str(folder / "alerts"), "checkpoint": str(folder / "chk")}}}
    config = parse_config({**config_data, "filters": [watching]}, kafka_required=False)
    shown = effective_config(parse_config({**config_data, "filters": [{**watching, "catalog": catalog.name}]},
                                          base=catalog.parent, kafka_required=False))["filters"]
    assert shown == [f"filters[0] (watchlist {catalog.name}, 22 targets within 3600 arcsec): size(watchlist_matches) > 0"]
    want = {candid for _, candid, _ in brute_force_pairs(moved.positions, catalog, 3600.0)}
    assert reprocess(spark, config, [str(moved.alerts)], [], "fink_sky_ztf") == len(want)
    return folder / "alerts"


def test_the_watchlist_keeps_the_alerts_near_a_target_with_every_target_near_them(moved: Sky, catalog: Path,
                                                                                  watched: Path) -> None:
    want = brute_force_pairs(moved.positions, catalog, 3600.0)
    rows = read_committed(watched, ["candid", "watchlist_id", "watchlist_separation_arcsec", "watchlist_matches"]).to_pylist()
    assert sorted(row["candid"] for row in rows) == sorted({candid for _, candid, _ in want})
    for row in rows:
        matches = row["watchlist_matches"]
        separations = [match["separation_arcsec"] for match in matches]
        assert separations == sorted(separations)  # nearest first
        assert (row["watchlist_id"], row["watchlist_separation_arcsec"]) == (matches[0]["id"], separations[0])
    got = [(match["id"], row["candid"], match["separation_arcsec"]) for row in rows for match in row["watchlist_matches"]]
    assert same_pairs(got, want)
    assert sum(name == "T-same" for name, _, _ in got) >= 2  # an id the catalog repeats
    assert any(len(row["watchlist_matches"]) >= 3 for row in rows)  # a target, its twin, and the other near one


def test_the_watchlist_equals_xmatch_run_on_its_output_afterwards(moved: Sky, catalog: Path, watched: Path) -> None:
    kept = read_committed(watched, ["candid", "watchlist_matches"]).to_pylist()
    from_stream = [(match["id"], row["candid"], match["separation_arcsec"]) for row in kept for match in row["watchlist_matches"]]
    target = moved.warehouse.parent / "watched_pairs.csv"
    xmatch(watched, catalog, "--radius", "3600", "--to", str(target))
    with target.open() as handle:
        afterwards = [(row["target_name"], int(row["candid"]), float(row["separation_arcsec"])) for row in csv.DictReader(handle)]
    assert same_pairs(afterwards, from_stream)


def test_bad_catalogs_and_watchlists_are_clear_errors(moved: Sky, catalog: Path, tmp_path: Path) -> None:
    def watchlist(**params: object) -> None:
        parse_filters([{"preset": "watchlist", "catalog": str(catalog), "radius": 5, "id_column": "name",
                        "ra_column": "ra_deg", "dec_column": "dec_deg", **params}], ZTF)

    with pytest.raises(ConfigError, match=r"filters\[0\].catalog .*nowhere.csv: no such file; give a .csv"):
        watchlist(catalog=str(tmp_path / "nowhere.csv"))
    with pytest.raises(ConfigError, match=r"has no column 'RA' \(filters\[0\].catalog ra column\); its columns: name, ra_deg"):
        watchlist(ra_column="RA")
    with pytest.raises(ConfigError, match=r"has no column 'id' .*its columns: name"):
        watchlist(id_column="id")
    with pytest.raises(ConfigError, match=r"filters\[0\].radius must be a positive number of arcsec"):
        watchlist(radius=0)
    with pytest.raises(ConfigError, match=r"column 'kind' must hold numbers \(degrees\), not string"):
        watchlist(dec_column="kind")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,ra_deg,dec_deg\nA,10,5\nB,10,95\n")
    with pytest.raises(ConfigError, match=r"bad.csv: target 2 has dec_deg 95: every target needs a position in degrees, "
                                          r"within \[-90, 90\]"):
        watchlist(catalog=str(bad))
    bad.write_text("name,ra_deg,dec_deg\nA,10,5\nB,,5\n")
    with pytest.raises(ConfigError, match=r"target 2 has ra_deg None"):
        watchlist(catalog=str(bad))
    big = tmp_path / "big.parquet"
    many = 100_001
    pq.write_table(pa.table({"name": [str(n) for n in range(many)], "ra_deg": np.zeros(many), "dec_deg": np.zeros(many)}), big)
    with pytest.raises(ConfigError, match=r"holds 100,001 targets; a watchlist is sent to every task and holds at most "
                                          r"100,000: cross-match larger catalogs with the table afterwards \(fink-spark xmatch\)"):
        watchlist(catalog=str(big))
    with pytest.raises(ConfigError, match="The radius must be a positive number of arcsec, at most 105538"):
        xmatch(moved.warehouse, catalog, "--radius", "200000")


def test_xmatch_from_the_command_line_and_the_python_api(moved: Sky, catalog: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import fink_spark

    with pytest.raises(SystemExit) as stopped:
        main(["xmatch", "--output", str(moved.warehouse), "--catalog", str(catalog), "--radius", "5", "--ra-column", "RA"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"fink-spark: {catalog} has no column 'RA' (--catalog ra column); its columns:")
    pairs = fink_spark.xmatch(str(moved.warehouse), catalog, 3600, ra_column="ra_deg", dec_column="dec_deg",
                              columns=["candid"])
    assert pairs.column_names == ["target_name", "target_ra_deg", "target_dec_deg", "target_kind", "candid", "ra", "dec",
                                  "separation_arcsec"]
    assert same_pairs([(row["target_name"], row["candid"], row["separation_arcsec"]) for row in pairs.to_pylist()],
                      brute_force_pairs(moved.positions, catalog, 3600.0))
