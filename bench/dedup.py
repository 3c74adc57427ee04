"""De-duplication's cost: a job over two topics that carry the same alerts, merging the
copies into one row per alert, against the same job writing every copy.

    .venv/bin/python bench/dedup.py --ztf 10000 --repeat 2

Publishes the same real ZTF alerts (replicated with new ids, 2 partitions) to two topics,
as Fink does for an alert that passes two of its filters. The job drains both as shipped
(console on, `--available-now`), `--repeat` times alternately:
- Iceberg (the default table) writing every copy, then merging them (`output.table.deduplicate`:
  each micro-batch MERGEs its copies into the table's rows, in the one query);
- Parquet writing every copy, then merging them (a second streaming query reads and decodes
  the topics again and merges copies in Spark's state: a Parquet file cannot change).
Reports records/s end to end (messages read / wall time) and the rows each table holds
(pyiceberg, pyarrow), and the ratio de-duplicating / writing every copy. Writes bench/DEDUP.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PARTITIONS, PASSWORD, ROOT, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402

from fink_spark.surveys import ZTF  # noqa: E402
from fink_spark.table.warehouse import load_pyiceberg  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402

GAP = "1 minute"


def run_job(broker: LocalKafka, topics: list[str], output_format: str, gap: str | None) -> tuple[float, int] | str:
    """Drain the topics as shipped; returns the wall seconds and the rows of the table, or
    why the job failed."""
    label = f"{output_format}_{'merged' if gap else 'every_copy'}"
    out = WORK / "out" / label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = shipped_config(ZTF, broker, topics[0], out, output_format)
    data = yaml.safe_load(config.read_text())
    data["kafka"].update({"topics": topics, "group_id": f"bench_{label}"})
    if gap:
        data["output"]["table"]["deduplicate"] = gap
    config.write_text(yaml.safe_dump(data))
    try:
        seconds, _, output = run_measured([str(ROOT / "spark-submit.sh"), "jobs/stream.py", "--config", str(config),
                                           "--available-now"])
    except RuntimeError as error:  # its output's end is in the message
        (WORK / "out" / f"{label}.log").write_text(str(error))
        exit_code = re.search(r"\(exit (-?\d+)\)", str(error))
        return f"failed (exit {exit_code.group(1) if exit_code else '?'}" + (
            ": out of memory" if exit_code and exit_code.group(1) == "52" else "") + ")"
    (WORK / "out" / f"{label}.log").write_text(output)
    if output_format == "iceberg":
        rows = len(load_pyiceberg(out / "alerts", "alerts").scan(selected_fields=("candid",)).to_arrow())
    else:
        rows = ds.dataset(out / "alerts", format="parquet", partitioning="hive",
                          exclude_invalid_files=True).count_rows()
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ztf", type=int, default=10000, help="ZTF alerts in each of the two topics")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job, alternating")
    parser.add_argument("--output", default=str(ROOT / "bench" / "DEDUP.md"))
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)  # a broker of its own, from empty
    results: dict[tuple[str, bool], list[tuple[float, int]]] = {}
    with LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK / "kafka") as broker:
        topics = [f"dedup_{name}_ztf_{args.ztf}" for name in ("sn", "early")]
        size = sum(publish_workload(broker, topic, ZTF, "ztf-2026", args.ztf, PARTITIONS) for topic in topics)
        print(f"published {args.ztf} alerts to each of {topics} ({size:.0f} MB)", flush=True)
        for _ in range(args.repeat):
            for output_format in ("iceberg", "parquet"):
                for gap in (None, GAP):
                    result = run_job(broker, topics, output_format, gap)
                    results.setdefault((output_format, gap is not None), []).append(result)
                    print(f"{output_format} {'merged' if gap else 'every copy'}: " + (result if isinstance(result, str) else
                          f"{2 * args.ztf / result[0]:.0f} records/s, {result[1]} rows"), flush=True)
    Path(args.output).write_text(report(results, args))
    print(f"results in {args.output}")


def report(results: dict[tuple[str, bool], list[tuple[float, int] | str]], args: argparse.Namespace) -> str:
    records = 2 * args.ztf

    def rate(key: tuple[str, bool]) -> float | None:
        done = [run[0] for run in results[key] if not isinstance(run, str)]
        return records / statistics.median(done) if done else None

    lines = [
        "# De-duplication: two topics of the same alerts, merged into one row per alert", "",
        f"`bench/dedup.py --ztf {args.ztf} --repeat {args.repeat}` on this machine ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"{args.ztf} real ZTF alerts (replicated with new ids) in each of two topics of {PARTITIONS} partitions: "
        f"{records} messages. The job as shipped (console on, `--available-now`), `deduplicate: {GAP}` or not; "
        "records/s end to end (wall time of `spark-submit`), medians of the runs.", "",
        "| table | copies | runs | records/s | rows in the table | merged / every copy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    hows = {("iceberg", False): "appended", ("iceberg", True): "merged: a MERGE a batch, in the one query",
            ("parquet", False): "appended", ("parquet", True): "merged: a second query, Spark's state"}
    for output_format in ("iceberg", "parquet"):
        for merged in (False, True):
            runs = results[(output_format, merged)]
            speed, every_copy = rate((output_format, merged)), rate((output_format, False))
            failures = sorted({run for run in runs if isinstance(run, str)})
            rows = next((run[1] for run in reversed(runs) if not isinstance(run, str)), None)
            ratio = f"{speed / every_copy:.2f}" if merged and speed and every_copy else ""
            lines.append(f"| {output_format.capitalize()} | {hows[(output_format, merged)]} | {len(runs)} | "
                         f"{f'{speed:.0f}' if speed else ''}{' ' + ', '.join(failures) if failures else ''} | "
                         f"{rows if rows is not None else ''} | {ratio} |")
    lines += ["", "Exit 52 is Spark's exit code for an OutOfMemoryError (spark-submit's default 1 GB driver)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
