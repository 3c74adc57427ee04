"""Where the stream job's fixed costs go, part by part: from the process start to the first
committed micro-batch, and the cold first micro-batch against the warm ones.

    .venv/bin/python bench/startup.py --ztf 20000 --repeat 2 [--variant NAME ...]
    .venv/bin/python bench/startup.py --lsst 4000 ...

It publishes replicated real ZTF (or LSST) alerts to a topic of 2 partitions, then runs the job as
shipped (`--available-now`, local[2]) with Spark's event log on, and reads the parts from
that log (each event's own time) and from the clock of this process:
- process start to SparkContext: spark-submit's JVM, Python and its imports, the config and
  the broker checks (the job asks the broker before Spark starts), the SparkContext;
- SparkContext to query start: the catalog, the tables (created or evolved), the query;
- query start to the first micro-batch: its first offsets and its planning;
- each micro-batch: its own time (`triggerExecution`) and the alerts it held;
- every Spark job run before the first micro-batch, by its description.
Variants (`--variant`) run in turn, round after round, on the same topic: `shipped`,
`no-cds` (the job without the class-data archive), `codegen-100` (whole-stage code
generation only over rows of 100 fields at most, Spark's own limit), and `previous`: another spark-submit.sh
(`--previous-script`, e.g. an earlier commit's, copied beside this one) with its own jars
and archive folder (`--previous-jars`, as FINK_SPARK_JARS). Results: printed, and with --output a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import PARTITIONS, PASSWORD, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402

from fink_spark.surveys import LSST, ZTF  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402

WORK_STARTUP = WORK / "startup"
VARIANTS = {
    "shipped": [],
    # the driver without its class-data archive (spark-submit.sh's options, less -XX:SharedArchiveFile)
    "no-cds": ["--conf", "spark.driver.extraJavaOptions=-XX:SharedArchiveFile=/nonexistent -Xshare:auto"],
    # Spark's own limit of whole-stage code generation (the job's is above an alert's hundreds of fields)
    "codegen-100": ["--conf", "spark.sql.codegen.maxFields=100"],
}


def events(folder: Path) -> list[dict]:
    """The events of the one application logged in `folder` (Spark 4 rolls its log: a folder of
    `events_<n>_...` files)."""
    (log,) = folder.iterdir()
    files = sorted(log.glob("events_*"), key=lambda path: int(path.name.split("_")[1])) if log.is_dir() else [log]
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def parts(started_ms: float, log: list[dict]) -> dict:
    """The fixed costs of one run, in seconds, from its event log."""
    app = next(e for e in log if e["Event"] == "SparkListenerApplicationStart")["Timestamp"]
    query = next(e for e in log if e["Event"].endswith("QueryStartedEvent"))
    query_start = _millis(query["timestamp"])
    batches = [e["progress"] for e in log if e["Event"].endswith("QueryProgressEvent") and _rows(e["progress"])]
    first = batches[0]
    first_start = _millis(first["timestamp"])
    jobs_before = [e for e in log if e["Event"] == "SparkListenerJobStart" and e["Submission Time"] < first_start]
    descriptions = [e["Properties"].get("spark.job.description") or e["Properties"].get("callSite.short", "?")
                    for e in jobs_before]
    first_job = min(e["Submission Time"] for e in log if e["Event"] == "SparkListenerJobStart" and e["Submission Time"] >= first_start)
    return {
        "to SparkContext": (app - started_ms) / 1000,
        "SparkContext to query start": (query_start - app) / 1000,
        "query start to batch 0": (first_start - query_start) / 1000,
        "batch 0": first["durationMs"]["triggerExecution"] / 1000,
        "batch 0 to its first Spark job": (first_job - first_start) / 1000,
        "batch 0 alerts": _rows(first),
        "batch 0 parts": first["durationMs"],
        "later batches, s per 1,000 alerts": statistics.median(
            1000 * b["durationMs"]["triggerExecution"] / 1000 / _rows(b) for b in batches[1:]) if batches[1:] else None,
        "batch 0, s per 1,000 alerts": first["durationMs"]["triggerExecution"] / _rows(first),
        "Spark jobs before batch 0": descriptions,
    }


def _rows(progress: dict) -> int:
    return sum(source.get("numInputRows", 0) for source in progress["sources"])


def _millis(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def run(broker: LocalKafka, topic: str, variant: str, index: int, args: argparse.Namespace) -> dict:
    out = WORK_STARTUP / f"{variant}_{index}"
    (out / "events").mkdir(parents=True)
    config = shipped_config(args.survey, broker, topic, out)
    script, env = str(ROOT / "spark-submit.sh"), {}
    if variant == "previous":
        script, env = str(Path(args.previous_script).resolve()), {"FINK_SPARK_JARS": str(Path(args.previous_jars).resolve())}
    started = time.time() * 1000
    seconds, _, output = run_measured([
        script, "--master", "local[2]", *VARIANTS.get(variant, []),
        "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={(out / 'events').as_uri()}",
        "--conf", "spark.eventLog.compress=false", "--conf", "spark.eventLog.rolling.enabled=false",
        "jobs/stream.py", "--config", str(config), "--available-now"], env=env)
    (out / "job.log").write_text(output)
    result = parts(started, events(out / "events"))
    result["end to end"] = seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workload = parser.add_mutually_exclusive_group()
    workload.add_argument("--ztf", type=int, help="ZTF 2026 alerts to publish (20,000 unless --lsst)")
    workload.add_argument("--lsst", type=int, help="LSST 2026 alerts to publish instead")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--variant", action="append", choices=[*sorted(VARIANTS), "previous"])
    parser.add_argument("--previous-script", help="the spark-submit.sh of variant 'previous'")
    parser.add_argument("--previous-jars", help="its FINK_SPARK_JARS folder (spark/ and cds/)")
    parser.add_argument("--output")
    args = parser.parse_args()
    args.survey, args.sample, args.alerts = (LSST, "lsst-2026", args.lsst) if args.lsst else (ZTF, "ztf-2026", args.ztf or 20000)
    shutil.rmtree(WORK_STARTUP, ignore_errors=True)
    WORK_STARTUP.mkdir(parents=True)
    variants = args.variant or ["shipped"]
    results: dict[str, list[dict]] = {variant: [] for variant in variants}
    with LocalKafka(users={USER: PASSWORD}, heap="2g", workdir=WORK_STARTUP / "kafka") as broker:
        topic = f"startup_{args.survey.name}_{args.alerts}"
        size = publish_workload(broker, topic, args.survey, args.sample, args.alerts, PARTITIONS)
        print(f"published {args.alerts} alerts ({size:.0f} MB) to {topic}", flush=True)
        for index in range(args.repeat):
            for variant in variants if index % 2 == 0 else variants[::-1]:
                result = run(broker, topic, variant, index, args)
                results[variant].append(result)
                print(f"{variant} #{index}: {json.dumps(result)}", flush=True)
    if args.output:
        Path(args.output).write_text(report(results, args))


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    rows = ["to SparkContext", "SparkContext to query start", "query start to batch 0", "batch 0",
            "batch 0 to its first Spark job",
            "batch 0, s per 1,000 alerts", "later batches, s per 1,000 alerts", "end to end"]
    lines = [f"`bench/startup.py --{args.survey.name} {args.alerts} --repeat {args.repeat}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: medians of {args.repeat} runs, seconds", "",
             "| part | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(f"{statistics.median(r[row] for r in runs):.2f}" for runs in results.values()) + " |")
    first = next(iter(results.values()))[0]
    lines += ["", f"Spark jobs before batch 0 ({next(iter(results))}): {first['Spark jobs before batch 0']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
