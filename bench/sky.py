"""Asking the sky of a season: cone searches, a cross-match and a watchlist, on a table after maintain.

    .venv/bin/python bench/sky.py                      # 100,000 ZTF alerts over 30 nights (about 20 minutes)
    .venv/bin/python bench/sky.py --alerts 20000 --nights 5 --watch 5000   # to check the harness

Publishes real ZTF alerts replicated with new ids, each copy moved on the sky (every ra/dec
inside it turned by the copy's own rotation, so that separations within an alert stay as
observed) and shifted by 0 to nights-1 days, to a topic of 2 partitions; drains it with the
shipped configuration; runs `fink-spark maintain` (closed nights sorted on the sky). Then:
the files that 30" cones at alert positions plan (pyiceberg, by `_healpix_29` metrics),
per night and in all; the cone's time against a full scan of the same columns; an
xmatch of 10,000 targets against brute force; and the watchlist filter's cost per
micro-batch on a stream, against the same stream without it. Writes bench/SKY.md.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from run import PASSWORD, ROOT, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402
from soak import batch_seconds  # noqa: E402

import fink_spark  # noqa: E402
from fink_spark.surveys import ZTF  # noqa: E402
from fink_spark.table.warehouse import load_pyiceberg  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402
from fink_spark.view.sky import Cone, iceberg_filter  # noqa: E402

FINK_SPARK = str(ROOT / ".venv" / "bin" / "fink-spark")
COLUMNS = ["candid", "objectId", "ra", "dec"]
CONE_ARCSEC = 30.0
MATCH_ARCSEC = 2.0


def drain(config: Path) -> tuple[float, list[float], str]:
    """The stream job as shipped, --available-now: wall seconds, each micro-batch's seconds, its log."""
    seconds, _, log = run_measured([str(ROOT / "spark-submit.sh"), "jobs/stream.py", "--config", str(config),
                                    "--available-now"])
    return seconds, batch_seconds(log), log


def positions(warehouse: Path) -> pa.Table:
    return load_pyiceberg(warehouse).scan(selected_fields=tuple(COLUMNS)).to_arrow()


def separations(ra0: np.ndarray, dec0: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Great-circle distances (arcsec), every row of the first against every one of the second."""
    def unit(r: np.ndarray, d: np.ndarray) -> np.ndarray:
        r, d = np.radians(r), np.radians(d)
        return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)

    chord = np.linalg.norm(unit(ra0, dec0)[:, None, :] - unit(ra, dec)[None, :, :], axis=-1)
    return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 3600


def cones(warehouse: Path, alerts: pa.Table, count: int, timed: int, rng: np.random.Generator) -> dict[str, object]:
    """Files planned by `count` cones at alert positions; `timed` of them read against a full scan."""
    table = load_pyiceberg(warehouse)
    every_file = list(table.scan().plan_files())
    nights_of = {task.file.file_path: str(task.file.partition) for task in every_file}
    nights = len(set(nights_of.values()))
    picks = rng.choice(alerts.num_rows, count, replace=False)
    ra, dec = alerts["ra"].to_numpy(), alerts["dec"].to_numpy()
    planned, per_night = [], []
    for index in picks:
        cone = Cone(float(ra[index]), float(dec[index]), CONE_ARCSEC)
        files = [task.file.file_path for task in table.scan(row_filter=iceberg_filter(table, cone.ranges())).plan_files()]
        planned.append(len(files))
        per_night += collections.Counter(nights_of[path] for path in files).values()
    cone_seconds, scan_seconds = [], []
    for index in picks[:timed]:
        started = time.perf_counter()
        found = fink_spark.cone(str(warehouse), float(ra[index]), float(dec[index]), CONE_ARCSEC, columns=COLUMNS)
        cone_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        whole = positions(warehouse)
        near = whole.filter(pa.array(separations(np.array([ra[index]]), np.array([dec[index]]), whole["ra"].to_numpy(),
                                                 whole["dec"].to_numpy())[0] <= CONE_ARCSEC))
        scan_seconds.append(time.perf_counter() - started)
        if sorted(found["candid"].to_pylist()) != sorted(near["candid"].to_pylist()):
            raise AssertionError(f"cone at alert {index}: {found.num_rows} alerts, the full scan finds {near.num_rows}")
    return {"files": len(every_file), "nights": nights, "cones": count, "planned mean": statistics.mean(planned),
            "planned max": max(planned), "per night max": max(per_night), "per night mean": statistics.mean(per_night),
            "fraction max": max(planned) / len(every_file), "timed": timed,
            "cone s": statistics.median(cone_seconds), "scan s": statistics.median(scan_seconds)}


def catalog(alerts: pa.Table, targets: int, rng: np.random.Generator, path: Path) -> Path:
    """Half the targets within 1.9" of an alert (a random direction), half anywhere on the sky."""
    near = targets // 2
    picks = rng.choice(alerts.num_rows, near, replace=False)
    offset, angle = rng.uniform(0, 0.95 * MATCH_ARCSEC, near) / 3600, rng.uniform(0, 2 * np.pi, near)
    dec_near = np.clip(alerts["dec"].to_numpy()[picks] + offset * np.sin(angle), -90, 90)
    ra_near = (alerts["ra"].to_numpy()[picks] + offset * np.cos(angle) / np.cos(np.radians(dec_near))) % 360
    far = targets - near
    ra = np.r_[ra_near, rng.uniform(0, 360, far)]
    dec = np.r_[dec_near, np.degrees(np.arcsin(rng.uniform(-1, 1, far)))]
    pq.write_table(pa.table({"id": [f"target-{i}" for i in range(targets)], "ra": ra, "dec": dec}), path)
    return path


def brute_force_pairs(alerts: pa.Table, targets: pa.Table) -> set[tuple[str, int]]:
    ra, dec, candid = alerts["ra"].to_numpy(), alerts["dec"].to_numpy(), alerts["candid"].to_numpy()
    pairs = set()
    for first in range(0, targets.num_rows, 200):
        chunk = targets.slice(first, 200)
        distance = separations(chunk["ra"].to_numpy(), chunk["dec"].to_numpy(), ra, dec)
        for row, column in zip(*np.nonzero(distance <= MATCH_ARCSEC)):
            pairs.add((chunk["id"][int(row)].as_py(), int(candid[column])))
    return pairs


def xmatch(warehouse: Path, alerts: pa.Table, targets: Path) -> dict[str, object]:
    out = targets.with_name("pairs.parquet")
    started = time.monotonic()
    subprocess.run([FINK_SPARK, "xmatch", "--output", str(warehouse), "--catalog", str(targets), "--radius",
                    str(MATCH_ARCSEC), "--to", str(out)], check=True, capture_output=True)
    seconds = time.monotonic() - started
    pairs = pq.read_table(out)
    found = set(zip(pairs["target_id"].to_pylist(), pairs["candid"].to_pylist()))
    started = time.monotonic()
    want = brute_force_pairs(alerts, pq.read_table(targets))
    brute = time.monotonic() - started
    if found != want or pairs.num_rows != len(want):
        raise AssertionError(f"xmatch: {pairs.num_rows} pairs, brute force {len(want)}; "
                             f"{len(found - want)} not within, {len(want - found)} missed")
    return {"targets": pq.read_metadata(targets).num_rows, "pairs": len(want), "seconds": seconds, "brute s": brute,
            "matched targets": len({target for target, _ in want})}


def watch_runs(broker: LocalKafka, topic: str, targets: Path, repeat: int) -> dict[str, list[dict[str, float]]]:
    """The stream job on `topic`, as shipped and with the watchlist, alternating."""
    runs: dict[str, list[dict[str, float]]] = {"as shipped": [], "with the watchlist": []}
    for attempt in range(repeat):
        for name in runs:
            out = WORK / "sky" / f"watch_{attempt}_{name.replace(' ', '_')}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            config = shipped_config(ZTF, broker, topic, out)
            if name != "as shipped":
                data = yaml.safe_load(config.read_text())
                data["filters"] = [*data.get("filters", []), {"preset": "watchlist", "catalog": str(targets),
                                                               "radius": MATCH_ARCSEC, "id_column": "id"}]
                config.write_text(yaml.safe_dump(data))
            seconds, batches, _ = drain(config)
            kept = load_pyiceberg(out / "alerts").scan(selected_fields=("candid",)).to_arrow().num_rows
            runs[name].append({"seconds": seconds, "batches": len(batches), "batch s": statistics.median(batches),
                               "batch sum s": sum(batches), "kept": kept})
    return runs


def report(args: argparse.Namespace, drained: tuple[float, int], maintained: float, sky: dict[str, object],
           matched: dict[str, object], watched: dict[str, list[dict[str, float]]]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    s = sky
    cone_ratio = s["scan s"] / s["cone s"]
    lines = [
        f"# Asking the sky of a season: {args.alerts:,} ZTF alerts over {args.nights} nights, {when}", "",
        "`bench/sky.py` on this machine (2 cores). Real ZTF 2026 alerts from data/sample, replicated with new ids;",
        "each copy is moved on the sky (every ra/dec inside it, of the source, its previous detections and its",
        "reference, turned by the copy's own rotation, so that separations within an alert stay as observed) and",
        f"shifted 0 to {args.nights - 1} days earlier, so that each night holds about {args.alerts // args.nights:,} alerts",
        "spread over the sky. Published to a topic of 2 partitions of the local broker, drained with the shipped",
        f"configuration (`--available-now`, {drained[1]} micro-batches, {drained[0]:.0f} s), then",
        f"`fink-spark maintain --target-file-mb {args.target_file_mb} --snapshot-age-hours 0 --retain-snapshots 1`",
        f"({maintained:.0f} s): every night is closed (before today), so each is rewritten sorted by `_healpix_29`.",
        f"The target size is {args.target_file_mb} MB so that a night of this bench holds as many files as a night of",
        f"{256 // args.target_file_mb} times more alerts would at the default 256 MB "
        f"({256 // args.target_file_mb * args.alerts // args.nights:,} alerts: a full ZTF night).", "",
        "## Cone search", "",
        f"{s['cones']} cones of {CONE_ARCSEC:g}\" centred on random alerts of the table; files planned by pyiceberg from",
        "the files' `_healpix_29` metrics (the filter `fink-spark cone` gives it).", "",
        "| live data files | nights | files a cone plans (mean / max) | per night it touches (mean / max) | "
        "largest share of all files |", "|---:|---:|---:|---:|---:|",
        f"| {s['files']} | {s['nights']} | {s['planned mean']:.1f} / {s['planned max']} | "
        f"{s['per night mean']:.2f} / {s['per night max']} | 1/{1 / s['fraction max']:.0f} |", "",
        f"Time, the median of {s['timed']} cones (each answer checked equal to the full scan's): "
        f"`fink_spark.cone(..., columns={COLUMNS})` {s['cone s']:.2f} s; a full scan of the same columns with",
        f"pyiceberg, then the great-circle distance of every row, {s['scan s']:.2f} s: **{cone_ratio:.0f}x** faster.", "",
        "## Cross-match", "",
        f"`fink-spark xmatch --radius {MATCH_ARCSEC:g}` with {matched['targets']:,} targets (half within 1.9\" of an alert,",
        f"half anywhere on the sky), written to Parquet: {matched['seconds']:.0f} s end to end (Spark's start-up included),",
        f"{matched['pairs']:,} pairs of {matched['matched targets']:,} targets, equal to brute force (every target against",
        f"every alert, numpy, {matched['brute s']:.0f} s).", "",
        "## Watchlist on the stream", "",
        f"{args.watch:,} alerts of the same kind on another topic of 2 partitions, drained by the job as shipped and by",
        f"the same job with `{{preset: watchlist, catalog: <the {matched['targets']:,} targets>, radius: {MATCH_ARCSEC:g},",
        f"id_column: id}}` added to its filters, alternating, {args.repeat} runs each (medians).", "",
        "| job | micro-batches | a micro-batch (median s) | all micro-batches (s) | end to end (s) | alerts kept |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in watched.items():
        lines.append(f"| {name} | {runs[0]['batches']} | {statistics.median(r['batch s'] for r in runs):.2f} | "
                     f"{statistics.median(r['batch sum s'] for r in runs):.1f} | "
                     f"{statistics.median(r['seconds'] for r in runs):.1f} | {runs[0]['kept']:,} |")
    plain, watch = (statistics.median(r["batch sum s"] for r in runs) for runs in watched.values())
    lines += ["", f"The watchlist's cost: {watch / plain:.2f}x the micro-batches' time without it. The join on cells",
              "(the catalog broadcast) costs less than the writing of the alerts it does not keep saves."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--watch", type=int, default=20_000, help="alerts of the watchlist's stream")
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--cones", type=int, default=200)
    parser.add_argument("--timed", type=int, default=20, help="cones timed against a full scan")
    parser.add_argument("--target-file-mb", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(36)
    out = WORK / "sky" / "season"
    shutil.rmtree(WORK / "sky", ignore_errors=True)
    out.mkdir(parents=True)
    with LocalKafka(users={USER: PASSWORD}) as broker:
        season, watch = f"sky_season_{args.alerts}", f"sky_watch_{args.watch}"
        print(f"publishing {args.alerts} alerts over {args.nights} nights, and {args.watch}", flush=True)
        publish_workload(broker, season, ZTF, "ztf-2026", args.alerts, 2, nights=args.nights)
        publish_workload(broker, watch, ZTF, "ztf-2026", args.watch, 2, nights=args.nights)
        config = shipped_config(ZTF, broker, season, out)
        seconds, batches, _ = drain(config)
        print(f"drained in {seconds:.0f} s", flush=True)
        started = time.monotonic()
        subprocess.run([FINK_SPARK, "maintain", "--config", str(config), "--target-file-mb", str(args.target_file_mb),
                        "--snapshot-age-hours", "0", "--retain-snapshots", "1"], check=True, capture_output=True)
        maintained = time.monotonic() - started
        warehouse = out / "alerts"
        alerts = positions(warehouse)
        if alerts.num_rows != args.alerts:
            raise AssertionError(f"the table holds {alerts.num_rows} alerts, {args.alerts} were published")
        print(f"maintained in {maintained:.0f} s; cones", flush=True)
        sky = cones(warehouse, alerts, args.cones, args.timed, rng)
        targets = catalog(alerts, args.targets, rng, WORK / "sky" / "targets.parquet")
        print("xmatch", flush=True)
        matched = xmatch(warehouse, alerts, targets)
        print("watchlist", flush=True)
        watched = watch_runs(broker, watch, targets, args.repeat)
    text = report(args, (seconds, len(batches)), maintained, sky, matched, watched)
    (ROOT / "bench" / "SKY.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
