"""Apache DataFusion Comet against Spark's own engine, on fink-spark's paths, side by side.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/comet.py --ztf 20000 --lsst 3000 --repeat 2

For each survey it publishes replicated real alerts to a topic of 2 partitions, then runs,
in turn, round after round:
- the stream job as shipped (`--available-now`), with Comet off and with Comet on;
- the table's reads (a full scan, a cone-shaped filter on the position, a count per night)
  with Comet off and on, in one Spark application each.
Every value of every alert the Comet runs wrote or read is compared with the Spark runs'
(the tables sorted by topic, partition and offset; `ingest_time` left out, it is the time of
writing). Comet's jar is resolved once into the local Maven repository (`mvn dependency:get`);
the job gets it through a folder of links beside .jars/ (FINK_SPARK_JARS). Results: bench/COMET.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from run import PARTITIONS, PASSWORD, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402

from fink_spark.surveys import LSST, ZTF, Survey  # noqa: E402
from fink_spark.table.warehouse import load_pyiceberg  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402

COMET = "org.apache.datafusion:comet-spark-spark4.1_2.13:1.2.0"
COMET_JAR = Path.home() / ".m2/repository/org/apache/datafusion/comet-spark-spark4.1_2.13/1.2.0/comet-spark-spark4.1_2.13-1.2.0.jar"
# Comet's documented set-up (plugin, its shuffle manager, off-heap memory for native
# execution), its native Iceberg write asked for, and why each operator stayed in Spark logged.
COMET_CONF = {
    "spark.plugins": "org.apache.spark.CometPlugin",
    "spark.shuffle.manager": "org.apache.spark.sql.comet.execution.shuffle.CometShuffleManager",
    "spark.comet.enabled": "true",
    "spark.comet.exec.enabled": "true",
    "spark.comet.shuffle.enabled": "true",
    "spark.comet.write.iceberg.enabled": "true",
    "spark.comet.explain.fallback.enabled": "true",
    "spark.memory.offHeap.enabled": "true",
    "spark.memory.offHeap.size": "1g",
}
WORK_COMET = WORK / "comet"


def comet_jars() -> Path:
    """A folder laid out as .jars/ (spark/, cds/) whose spark/ also holds Comet's jar."""
    if not COMET_JAR.exists():
        subprocess.run(["mvn", "--batch-mode", "--quiet", "dependency:get", f"-Dartifact={COMET}", "-Dtransitive=false"],
                       check=True)
    folder = WORK_COMET / "jars"
    (folder / "spark").mkdir(parents=True, exist_ok=True)
    for jar in [*(ROOT / ".jars" / "spark").glob("*.jar"), COMET_JAR]:
        link = folder / "spark" / jar.name
        if not link.exists():
            link.symlink_to(jar)
    if not (folder / "cds").exists() and (ROOT / ".jars" / "cds").exists():
        (folder / "cds").symlink_to(ROOT / ".jars" / "cds")
    return folder


def submit(args: list[str], comet: bool) -> tuple[float, str]:
    """spark-submit.sh with `args`, on Spark alone or with Comet; wall seconds and output."""
    conf = [item for key, value in COMET_CONF.items() for item in ("--conf", f"{key}={value}")] if comet else []
    env = {"FINK_SPARK_JARS": str(comet_jars())} if comet else {}
    seconds, _, output = run_measured([str(ROOT / "spark-submit.sh"), "--master", "local[2]", *conf, *args], env=env)
    return seconds, output


def stream(broker: LocalKafka, topic: str, survey: Survey, comet: bool, run: int) -> tuple[float, float | None, Path, str]:
    out = WORK_COMET / f"{topic}_{'comet' if comet else 'spark'}_{run}"
    out.mkdir(parents=True)
    config = shipped_config(survey, broker, topic, out)
    seconds, output = submit(["jobs/stream.py", "--config", str(config), "--available-now"], comet)
    (out / "job.log").write_text(output)
    done = re.search(r"alerts done: (\d+) records in ([\d.]+) s of micro-batches", output)
    return seconds, float(done.group(2)) if done else None, out / "alerts", output


def accelerated(output: str) -> str:
    """Comet's own account of the last plan it saw: 'Comet accelerated N out of M eligible operators'."""
    lines = re.findall(r"Comet accelerated \d+ out of \d+ eligible operators", output)
    reasons = sorted(set(re.findall(r"\[COMET: ([^\]]+)\]", output)))
    return (lines[-1] if lines else "no Comet plan line") + ("; " + " / ".join(reasons) if reasons else "")


def table_rows(warehouse: Path, survey: Survey) -> pa.Table:
    """The alerts table read without Spark (pyiceberg plans, pyarrow reads the files: pyiceberg
    0.12 would read a null list of structs as []), in Kafka order."""
    files = [task.file.file_path.removeprefix("file:") for task in load_pyiceberg(warehouse).scan().plan_files()]
    table = pa.concat_tables([pq.read_table(path) for path in files])
    table = table.drop_columns(["ingest_time"])
    return table.take(pc.sort_indices(table, [("topic", "ascending"), ("kafka_partition", "ascending"),
                                              ("kafka_offset", "ascending")]))


def same_values(a: pa.Table, b: pa.Table) -> bool:
    """Every value equal, NaN equal to NaN (Arrow's own `equals` holds NaN unequal to itself,
    and Fink's alerts carry NaNs in Plx, e_Plx and the light-curve features)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        if a[name].equals(b[name]):
            continue
        for start in range(0, a.num_rows, 1000):
            if not _same(a[name].slice(start, 1000).to_pylist(), b[name].slice(start, 1000).to_pylist()):
                print(f"column {name} differs in rows {start} to {start + 999}", flush=True)
                return False
    return True


def _same(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):  # a map is a list of (key, value)
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return x == y


QUERIES_SCRIPT = ROOT / "bench" / "comet_queries.py"


def queries(warehouse: Path, survey: Survey, comet: bool) -> dict:
    seconds, output = submit([str(QUERIES_SCRIPT), str(warehouse), survey.name], comet)
    result = json.loads(output.strip().splitlines()[-1])
    result["wall"] = seconds
    result["plan"] = accelerated(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ztf", type=int, default=20000)
    parser.add_argument("--lsst", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "bench" / "COMET.md"))
    args = parser.parse_args()
    shutil.rmtree(WORK_COMET, ignore_errors=True)
    WORK_COMET.mkdir(parents=True)
    comet_jars()
    lines = [f"# Comet 1.2.0 against Spark 4.1.3, run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"`bench/comet.py --ztf {args.ztf} --lsst {args.lsst} --repeat {args.repeat}`: local[2], the shipped "
             f"configuration, topics of {PARTITIONS} partitions; each pair's order alternates.", ""]
    with LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK_COMET / "kafka") as broker:
        for survey, folder, count in [(ZTF, "ztf-2026", args.ztf), (LSST, "lsst-2026", args.lsst)]:
            if not count:
                continue
            topic = f"comet_{survey.name}_{count}"
            size = publish_workload(broker, topic, survey, folder, count, PARTITIONS)
            print(f"published {count} {survey.name} alerts ({size:.0f} MB) to {topic}", flush=True)
            runs: dict[bool, list] = {False: [], True: []}
            reads: dict[bool, list] = {False: [], True: []}
            reference, same_written, same_read, plan = None, [], [], ""
            for round_ in range(args.repeat):
                for comet in ([False, True] if round_ % 2 == 0 else [True, False]):
                    seconds, batches, warehouse, output = stream(broker, topic, survey, comet, round_)
                    rows = table_rows(warehouse, survey)
                    if reference is None:
                        reference = rows
                    if comet:
                        same_written.append(same_values(rows, reference))
                        plan = accelerated(output)
                    runs[comet].append((seconds, batches, rows.num_rows))
                    print(f"{topic} stream, comet={comet}: {rows.num_rows} rows, {seconds:.1f} s "
                          f"({batches} s of micro-batches)", flush=True)
                for comet in ([False, True] if round_ % 2 == 0 else [True, False]):
                    read = queries(WORK_COMET / f"{topic}_spark_0" / "alerts", survey, comet)
                    reads[comet].append(read)
                    print(f"{topic} reads, comet={comet}: {read}", flush=True)
                same_read.append(reads[True][-1]["digests"] == reads[False][-1]["digests"])
            lines += table(survey, count, size, runs, reads, same_written, same_read, plan)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"results in {args.output}")


def table(survey: Survey, count: int, size: float, runs: dict, reads: dict, same_written: list, same_read: list,
          plan: str) -> list[str]:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    spark_s, comet_s = median([r[0] for r in runs[False]]), median([r[0] for r in runs[True]])
    spark_b, comet_b = median([r[1] for r in runs[False]]), median([r[1] for r in runs[True]])
    out = [f"## {survey.name.upper()}, {count} alerts ({size:.0f} MB)", "",
           "| path | Spark (median s) | Comet (median s) | Spark / Comet | same values |",
           "|---|---:|---:|---:|---|",
           f"| stream job, end to end | {spark_s:.1f} | {comet_s:.1f} | {spark_s / comet_s:.2f} | "
           f"{'every alert, every field' if all(same_written) else 'NO: ' + str(same_written)} |",
           f"| stream job, micro-batches | {spark_b:.1f} | {comet_b:.1f} | {spark_b / comet_b:.2f} | |"]
    for name in reads[False][0]["seconds"]:
        s = median([r["seconds"][name] for r in reads[False]])
        c = median([r["seconds"][name] for r in reads[True]])
        out.append(f"| read: {name} | {s:.2f} | {c:.2f} | {s / c:.2f} | "
                   f"{'yes' if all(same_read) else 'NO'} |")
    out += ["", f"Stream job with Comet: {plan}.", "",
            f"Reads with Comet: {reads[True][-1]['plan']}.", ""]
    return out


if __name__ == "__main__":
    main()
