"""Where the shipped job's task time goes, per alert, with the Iceberg table: a JFR profile.

    .venv/bin/python bench/profile.py                       # 20,000 ZTF alerts (about 3 minutes)
    .venv/bin/python bench/profile.py --survey lsst --alerts 5000

Publishes real alerts replicated with new ids to a topic of 2 partitions and drains it with
the shipped configuration (console on, the Iceberg table, local[2], `--available-now`)
under Java Flight Recorder (`settings=profile`). The tasks' stack samples (threads `Executor
task launch worker`) are then given each to one part of the work: the first frame, from
the top of the stack down, of a library the part names (`PARTS`, in order); a sample in
the JDK alone (a copy, a hash map) goes to the part of the first library frame below it.
Java samples (`jdk.ExecutionSample`, every 10 ms of a thread running Java) are CPU; native
ones (`jdk.NativeMethodSample`, every 20 ms of a thread in native code: zstd, a socket) are
wall time. Prints milliseconds per 1,000 alerts for each part and writes bench/PROFILE.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PASSWORD, ROOT, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402

from fink_spark.surveys import LSST, ZTF  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402

# (part, the class-name prefixes of its frames), looked for in this order at each frame
PARTS = [
    ("zstd compression", ("com.github.luben.zstd", "io.airlift.compress", "org.apache.parquet.hadoop.codec",
                          "org.apache.hadoop.io.compress")),
    ("Parquet encoding: values, levels, pages", ("org.apache.parquet",)),
    ("Iceberg's writers: rows to Parquet values", ("org.apache.iceberg.spark.data", "org.apache.iceberg.parquet")),
    ("Iceberg: files, metrics, commit", ("org.apache.iceberg",)),
    ("Avro decoding (from_avro)", ("org.apache.spark.sql.avro", "org.apache.avro")),
    ("Kafka fetch", ("org.apache.kafka", "org.apache.spark.sql.kafka010")),
    ("Python (pandas UDFs, foreachBatch) and Arrow", ("org.apache.spark.api.python", "org.apache.spark.sql.execution.python",
                                                      "org.apache.arrow")),
    ("Spark's generated code: projections, filters, observe", ("org.apache.spark.sql.catalyst.expressions.GeneratedClass",
                                                               "org.apache.spark.sql.catalyst.expressions",
                                                               "org.apache.spark.sql.execution.aggregate")),
    ("Spark's rows, memory and serialization", ("org.apache.spark.unsafe", "org.apache.spark.sql.catalyst",
                                                "org.apache.spark.serializer", "org.apache.spark.memory")),
    ("Hadoop's file system", ("org.apache.hadoop",)),
    ("Spark, other", ("org.apache.spark",)),
]
JDK = ("java.", "jdk.", "sun.", "com.sun.")
TASK_THREAD = "Executor task launch worker"
PERIODS_MS = {"jdk.ExecutionSample": 10, "jdk.NativeMethodSample": 20}


def part_of(frames: list[str]) -> str:
    """The part a stack sample belongs to (`frames`: class names, the top of the stack first)."""
    for name in frames:
        for part, prefixes in PARTS:
            if name.startswith(prefixes):
                return part
    return "JDK only" if all(name.startswith(JDK) for name in frames) else "other"


def samples(recording: Path, event: str) -> list[tuple[str, list[str]]]:
    """(thread, class names of its frames, top first) of each sample of `event`."""
    printed = subprocess.run(["jfr", "print", "--json", "--stack-depth", "64", "--events", event, str(recording)],
                             capture_output=True, text=True, check=True).stdout
    found = []
    for item in json.loads(printed)["recording"]["events"]:
        values = item["values"]
        thread = (values.get("sampledThread") or {}).get("javaName") or ""
        frames = [frame["method"]["type"]["name"].replace("/", ".") for frame in (values.get("stackTrace") or {}).get("frames", [])]
        found.append((thread, frames))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--survey", choices=["ztf", "lsst"], default="ztf")
    parser.add_argument("--output", default=str(ROOT / "bench" / "PROFILE.md"))
    args = parser.parse_args()
    survey, folder = (ZTF, "ztf-2026") if args.survey == "ztf" else (LSST, "lsst-2026")
    shutil.rmtree(WORK, ignore_errors=True)
    out = WORK / "out" / "profile"
    out.mkdir(parents=True)
    recording = out / "job.jfr"
    with LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK / "kafka") as broker:
        topic = f"bench_profile_{survey.name}_{args.alerts}"
        size = publish_workload(broker, topic, survey, folder, args.alerts, 2)
        print(f"published {args.alerts} alerts ({size:.0f} MB) to {topic}", flush=True)
        config = shipped_config(survey, broker, topic, out)
        seconds, peak, output = run_measured([
            str(ROOT / "spark-submit.sh"), "--master", "local[2]",
            "--driver-java-options", f"-XX:StartFlightRecording=filename={recording},settings=profile,dumponexit=true",
            "jobs/stream.py", "--config", str(config), "--available-now"])
    (out / "job.log").write_text(output)
    done = re.search(r"alerts done: (\d+) records in ([\d.]+) s of micro-batches", output)
    batches = float(done.group(2)) if done else float("nan")
    per_part: Counter[str] = Counter()
    native: Counter[str] = Counter()
    others = Counter()
    for event, period in PERIODS_MS.items():
        for thread, frames in samples(recording, event):
            if not thread.startswith(TASK_THREAD):
                others[event] += period
                continue
            (per_part if event == "jdk.ExecutionSample" else native)[part_of(frames)] += period
    cpu = sum(per_part.values())
    per_thousand = 1000 / args.alerts
    lines = [
        f"# Where the job's task time goes, per alert ({survey.name.upper()}, the Iceberg table)",
        "",
        f"`bench/profile.py` on this machine (2 cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{args.alerts:,} {survey.name.upper()} 2026 alerts replicated with new ids ({size:.0f} MB) on a topic of 2 "
        f"partitions, drained with the shipped configuration under JFR: {seconds:.1f} s end to end, {batches:.1f} s of "
        f"micro-batches, peak {peak:.0f} MB.",
        "",
        "Each stack sample of the tasks' threads goes to the first frame, from the top of the stack, of a library "
        "below (JDK frames go to the library that called them). Java samples are CPU time; native ones are the time "
        "threads spent in native code (zstd, sockets), sampled apart.",
        "",
        "| part of the tasks' work | CPU ms per 1,000 alerts | share of the tasks' CPU | native ms per 1,000 alerts |",
        "|---|---:|---:|---:|",
        *(f"| {part} | {ms * per_thousand:,.0f} | {ms / cpu:.0%} | {native.get(part, 0) * per_thousand:,.0f} |"
          for part, ms in per_part.most_common()),
        *(f"| {part} | 0 | 0% | {ms * per_thousand:,.0f} |" for part, ms in native.most_common() if part not in per_part),
        f"| **the tasks, in all** | **{cpu * per_thousand:,.0f}** | | **{sum(native.values()) * per_thousand:,.0f}** |",
        "",
        f"Other threads (the driver, Python's gateway, Kafka's and Spark's own): {others['jdk.ExecutionSample'] / 1000:.1f} s "
        f"of Java samples, {others['jdk.NativeMethodSample'] / 1000:.1f} s in native code. With 2 cores, "
        f"{2 * batches * 1000 * per_thousand:,.0f} core-ms per 1,000 alerts pass during the micro-batches.",
        "",
    ]
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
