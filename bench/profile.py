"""Where the shipped job's task time goes, per alert, with the Iceberg table: a JFR profile.

    .venv/bin/python bench/profile.py                       # 20,000 ZTF alerts (about 3 minutes)
    .venv/bin/python bench/profile.py --survey lsst --alerts 5000

Publishes real alerts replicated with new ids to a topic of 2 partitions and drains it with
the shipped configuration (console on, the Iceberg table, local[2], `--available-now`)
under Java Flight Recorder (`settings=profile`). The tasks' stack samples (threads `Executor
task launch worker`) are then given each to one part of the work: Parquet's column
statistics where a frame computes them, else the first frame, from the top of the stack
down, of a library a part names (`PARTS`, in order); a sample in the JDK alone (a copy, a
hash map) goes to the part of the first library frame below it. JFR samples a few threads
per period, not every one: the shares are what it measures, and each part's core time is
its share of the two cores' time during the micro-batches. Prints the parts and writes
bench/PROFILE.md.
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
STATISTICS = "Parquet's column statistics (min and max of every value)"
PARQUET = ("org.apache.parquet", "org.apache.iceberg.shaded.org.apache.parquet")  # Iceberg's runtime shades Parquet
PARTS = [
    ("zstd compression", ("com.github.luben.zstd", "io.airlift.compress", "org.apache.iceberg.shaded.io.airlift",
                          *(f"{prefix}.hadoop.codec" for prefix in PARQUET), "org.apache.hadoop.io.compress")),
    ("Parquet encoding: values, levels, pages", PARQUET),
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


def part_of(frames: list[str]) -> str:
    """The part a stack sample belongs to (`frames`: class names, the top of the stack first)."""
    if any(name.startswith(tuple(f"{prefix}.column.statistics" for prefix in PARQUET)) for name in frames):
        return STATISTICS
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
    java = Counter(part_of(frames) for thread, frames in samples(recording, "jdk.ExecutionSample")
                   if thread.startswith(TASK_THREAD))
    native = Counter(part_of(frames) for thread, frames in samples(recording, "jdk.NativeMethodSample")
                     if thread.startswith(TASK_THREAD))
    total = sum(java.values())
    core_ms = 2 * batches * 1000 * 1000 / args.alerts  # the two cores' time per 1,000 alerts during the micro-batches
    lines = [
        f"# Where the job's task time goes, per alert ({survey.name.upper()}, the Iceberg table)",
        "",
        f"`bench/profile.py` on this machine (2 cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{args.alerts:,} {survey.name.upper()} 2026 alerts replicated with new ids ({size:.0f} MB) on a topic of 2 "
        f"partitions, drained with the shipped configuration under JFR: {seconds:.1f} s end to end, {batches:.1f} s of "
        f"micro-batches ({core_ms:,.0f} core-ms per 1,000 alerts on 2 cores), peak {peak:.0f} MB.",
        "",
        f"{total:,} Java stack samples of the tasks' threads, each given to the part of the work its frames show "
        "(Parquet's statistics wherever a frame computes them; else the first library frame from the top of the stack, "
        "the JDK's frames going to the library that called them). The core time is each part's share of the two cores' "
        "time during the micro-batches.",
        "",
        "| part of the tasks' work | share of the samples | ≈ core-ms per 1,000 alerts |",
        "|---|---:|---:|",
        *(f"| {part} | {count / total:.1%} | {count / total * core_ms:,.0f} |" for part, count in java.most_common()),
        "",
        f"Native samples (threads in native code, sampled apart; wall time, not CPU): {sum(native.values()):,}, "
        + ", ".join(f"{part} {count:,}" for part, count in native.most_common()) + ".",
        "",
    ]
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
