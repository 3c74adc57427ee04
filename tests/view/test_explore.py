"""Looking at kept alerts: terminal tables, cutouts, light curves, cards and summaries,
rendered from the job's Parquet output of real ZTF and LSST alerts.

Each output also holds a stray Parquet file that its sink never committed (as a batch
interrupted by a crash leaves): explore must not show its alerts."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import sample
from reference import read_alerts

from fink_spark.cli.explore import main as explore
from fink_spark.surveys import LSST, MJD_ZERO, ZTF
from fink_spark.view.plots import lightcurve_points

ZTF_ALERTS = read_alerts(sample("ztf-2026"))
LSST_ALERTS = read_alerts(sample("lsst-2026"))


@pytest.fixture(scope="module")
def outputs(reprocessed_samples: dict[str, Path]) -> dict[str, str]:
    """Parquet outputs of the ZTF and the LSST samples, written as the job writes them, each
    with a file that its sink never committed (conftest)."""
    return {name: str(output) for name, output in reprocessed_samples.items()}


def run(spark, *argv: str) -> str:  # noqa: ANN001 - spark: the session --where joins
    out = io.StringIO()
    explore(list(argv), out=out)
    return out.getvalue()


def assert_picture(path: Path, width: int, height: int) -> None:
    """A PNG of the expected size with real content (not one flat colour)."""
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert float(np.std(image[..., :3])) > 0.05


def test_show_prints_the_tutorial_table_csv_and_json(spark, outputs) -> None:  # noqa: ANN001
    table = run(spark, "show", outputs["ztf"], "--limit", "3", "--where", "candidate.magpsf < 17")
    bright = sorted((a for a in ZTF_ALERTS if a["candidate"]["magpsf"] < 17), key=lambda a: a["candid"])
    lines = table.splitlines()
    assert lines[0].split(" | ")[2:4] == ["objectId    ", "cdsxmatch"]
    assert len(lines) == 2 + min(3, len(bright)) and lines[-1] == f"({min(3, len(bright))} alerts shown, page 0)"
    rows = list(csv.DictReader(io.StringIO(run(spark, "show", outputs["ztf"], "--format", "csv", "--limit", "100"))))
    assert sorted(row["objectId"] for row in rows) == sorted(a["objectId"] for a in ZTF_ALERTS)
    records = json.loads(run(spark, "show", outputs["lsst"], "--format", "json", "--limit", "100"))
    assert sorted(int(r["diaSourceId"]) for r in records) == sorted(a["diaSourceId"] for a in LSST_ALERTS)
    assert {r["band"] for r in records} == {a["diaSource"]["band"] for a in LSST_ALERTS}


@pytest.mark.parametrize("survey", ["ztf", "lsst"])
def test_cutouts_and_card_are_real_pictures(spark, outputs, survey: str, tmp_path: Path) -> None:  # noqa: ANN001
    alert = (ZTF_ALERTS if survey == "ztf" else LSST_ALERTS)[0]
    alert_id = alert["candid"] if survey == "ztf" else alert["diaSourceId"]
    run(spark, "cutouts", outputs[survey], "--id", str(alert_id), "--output", str(tmp_path / "cutouts.png"))
    assert_picture(tmp_path / "cutouts.png", 900, 340)
    run(spark, "card", outputs[survey], "--id", str(alert_id), "--output", str(tmp_path / "card.png"))
    assert_picture(tmp_path / "card.png", 1100, 750)


def ztf_reference_points(object_id: str) -> set[tuple[float, str, float, bool]]:
    """Detections (magpsf) and upper limits (diffmaglim), each (time, band) once."""
    points: dict[tuple[float, str], tuple[float, bool]] = {}
    for alert in (a for a in ZTF_ALERTS if a["objectId"] == object_id):
        for c in [alert["candidate"], *(alert["prv_candidates"] or [])]:
            key = (round(c["jd"] - 2400000.5, 7), "gri"[c["fid"] - 1])
            if c["magpsf"] is not None:
                points[key] = (c["magpsf"], False)
            elif c["diffmaglim"] is not None and key not in points:
                points[key] = (c["diffmaglim"], True)
    return {(mjd, band, value, limit) for (mjd, band), (value, limit) in points.items()}


def test_ztf_light_curve_points_and_picture(spark, outputs, tmp_path: Path) -> None:  # noqa: ANN001
    object_id = max(ZTF_ALERTS, key=lambda a: len(a["prv_candidates"] or []))["objectId"]
    rows = [r.asDict(recursive=True) for r in spark.read.parquet(outputs["ztf"]).where(f"objectId = '{object_id}'").collect()]
    points = lightcurve_points(rows, ZTF)
    assert {(round(p.mjd, 7), p.band, p.value, p.limit) for p in points} == ztf_reference_points(object_id)
    assert len(points) == len({(p.mjd, p.band) for p in points}) > 3
    run(spark, "lightcurve", outputs["ztf"], "--object-id", object_id, "--output", str(tmp_path / "lc.png"))
    assert_picture(tmp_path / "lc.png", 800, 450)


def test_lsst_light_curve_points(spark, outputs, tmp_path: Path) -> None:  # noqa: ANN001
    alert = LSST_ALERTS[0]
    chosen = spark.read.parquet(outputs["lsst"]).where(f"diaSourceId = {alert['diaSourceId']}")
    rows = [r.asDict(recursive=True) for r in chosen.collect()]
    points = lightcurve_points(rows, LSST)
    sources = {s["diaSourceId"]: s for s in [alert["diaSource"], *(alert["prvDiaSources"] or [])] if s["psfFlux"] is not None}
    forced = [f for f in alert["prvDiaForcedSources"] or [] if f["psfFlux"] is not None]
    assert sorted((p.mjd, p.band, p.value) for p in points if not p.forced) == sorted(
        (s["midpointMjdTai"], s["band"], s["psfFlux"]) for s in sources.values())
    assert sorted((p.mjd, p.band, p.value) for p in points if p.forced) == sorted(
        (f["midpointMjdTai"], f["band"], f["psfFlux"]) for f in forced)
    run(spark, "lightcurve", outputs["lsst"], "--id", str(alert["diaSourceId"]), "--output", str(tmp_path / "lc.png"))
    assert_picture(tmp_path / "lc.png", 800, 450)


def test_summary_text_and_picture(spark, outputs, tmp_path: Path) -> None:  # noqa: ANN001
    text = run(spark, "summary", outputs["ztf"], "--output", str(tmp_path / "summary.png"))
    classes = {}
    for alert in ZTF_ALERTS:
        classes[alert["finkclass"]] = classes.get(alert["finkclass"], 0) + 1
    assert text.splitlines()[:3] == [f"{len(ZTF_ALERTS)} alerts", "per topic:", f"  fink_explore_ztf  {len(ZTF_ALERTS)}"]
    for name, count in classes.items():
        assert f"  {name}  {count}" in text
    assert_picture(tmp_path / "summary.png", 1100, 700)


def test_no_matching_alert_is_a_clear_error(spark, outputs, tmp_path: Path) -> None:  # noqa: ANN001
    from fink_spark.errors import ConfigError

    with pytest.raises(ConfigError, match="No alert matches the selection."):
        run(spark, "cutouts", outputs["ztf"], "--object-id", "ZTF00nothere", "--output", str(tmp_path / "x.png"))


@pytest.mark.subprocess
def test_explore_answers_without_spark_and_prints_only_its_answer(outputs, tmp_path: Path) -> None:  # noqa: ANN001
    """As a user runs it: the installed command, no JVM started (Spark would write its
    warnings to stderr), no astropy warning about ZTF's cutout headers."""
    command = [str(Path(sys.executable).with_name("fink-spark")), "explore"]
    environment = {**os.environ, "JAVA_HOME": "/nonexistent", "PATH": str(Path(sys.executable).parent)}
    shown = subprocess.run([*command, "show", outputs["ztf"], "--format", "csv", "--limit", "1000"],
                           capture_output=True, text=True, env=environment, check=True)
    assert shown.stderr == ""
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert sorted(row["objectId"] for row in rows) == sorted(a["objectId"] for a in ZTF_ALERTS)
    card = subprocess.run([*command, "card", outputs["ztf"], "--id", str(ZTF_ALERTS[0]["candid"]),
                           "--output", str(tmp_path / "card.png")], capture_output=True, text=True, env=environment)
    assert (card.returncode, card.stderr, card.stdout) == (0, "", f"written {tmp_path / 'card.png'}\n")


def test_show_selects_by_topic_night_and_object(spark, outputs) -> None:  # noqa: ANN001
    topic = "fink_explore_lsst"
    rows = list(csv.DictReader(io.StringIO(run(spark, "show", outputs["lsst"], "--format", "csv", "--limit", "1000",
                                                "--topic", topic))))
    assert sorted(int(row["diaSourceId"]) for row in rows) == sorted(a["diaSourceId"] for a in LSST_ALERTS)
    assert run(spark, "show", outputs["lsst"], "--topic", "another").splitlines()[-1] == "(0 alerts shown, page 0)"
    alert = LSST_ALERTS[0]
    night = (MJD_ZERO + timedelta(days=alert["diaSource"]["midpointMjdTai"])).date().isoformat()
    chosen = list(csv.DictReader(io.StringIO(run(
        spark, "show", outputs["lsst"], "--format", "csv", "--night", night,
        "--object-id", str(alert["diaSource"]["diaObjectId"])))))
    expected = [a for a in LSST_ALERTS if a["diaSource"]["diaObjectId"] == alert["diaSource"]["diaObjectId"]]
    assert sorted(int(row["diaSourceId"]) for row in chosen) == sorted(a["diaSourceId"] for a in expected)
    assert chosen[0]["timestamp"].startswith(night)


def test_a_bad_where_is_one_clear_line(spark, outputs) -> None:  # noqa: ANN001
    from fink_spark.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--where 'candidate.nothere > 1' is not a Spark SQL condition"):
        run(spark, "show", outputs["ztf"], "--where", "candidate.nothere > 1")


@pytest.mark.subprocess
def test_pictures_without_matplotlib_say_what_to_install(spark, outputs, tmp_path: Path) -> None:  # noqa: ANN001
    """A fresh Python where matplotlib cannot be imported, as without the [plots] extra."""
    no_matplotlib = "import sys; sys.modules['matplotlib'] = None; from fink_spark.cli import main; main()"
    card = subprocess.run(
        [sys.executable, "-c", no_matplotlib, "explore", "card", outputs["ztf"], "--id", str(ZTF_ALERTS[0]["candid"]),
         "--output", str(tmp_path / "card.png")], capture_output=True, text=True, cwd=tmp_path)
    assert (card.returncode, card.stdout) == (2, "")
    assert card.stderr == "fink-spark: Pictures need matplotlib and astropy (matplotlib is not installed): " \
                          "pip install 'fink-spark[plots]'.\n"
    summary = subprocess.run([sys.executable, "-c", no_matplotlib, "explore", "summary", outputs["ztf"]],
                             capture_output=True, text=True, cwd=tmp_path, check=True)
    assert summary.stdout.startswith(f"{len(ZTF_ALERTS)} alerts\n")  # the text needs no plotting
