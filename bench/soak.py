"""A season of small micro-batches: the Iceberg table against the plain Parquet sink.

    .venv/bin/python bench/soak.py --batches 5000 --alerts-per-batch 2

Publishes `batches x alerts-per-batch` real ZTF alerts (replicated with new ids) to the
local broker, then drains them with the shipped configuration, one micro-batch per
`alerts-per-batch` alerts, once per sink. For each: the time of a micro-batch at the start
and at the end, the data files written, the size of the sink's log (Parquet's
`_spark_metadata`) or of the table's metadata (Iceberg's `metadata/` and catalog), and the
time pandas takes to read the whole output; for Iceberg, each again after
`fink-spark maintain`. Writes bench/SOAK.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402
from run import PASSWORD, ROOT, USER, WORK, publish_workload, run_measured, shipped_config  # noqa: E402

from fink_spark.surveys import ZTF  # noqa: E402
from fink_spark.table.warehouse import load_pyiceberg  # noqa: E402
from fink_spark.testing.local_broker import LocalKafka  # noqa: E402

BATCH_LINE = re.compile(r"alerts: batch \d+, \d+ records in ([\d.]+) s")


def batch_seconds(log: str) -> list[float]:
    """Each micro-batch's duration (Spark's triggerExecution), from the job's own batch lines."""
    return [float(seconds) for seconds in BATCH_LINE.findall(log)]


def size_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()) / 1e6


def measure(output: Path, output_format: str) -> dict[str, float]:
    """Files, log size and pandas' read time of an output, as it is now."""
    import pandas as pd

    started = time.monotonic()
    if output_format == "iceberg":
        table = load_pyiceberg(output)
        rows = len(table.scan().to_pandas())
        seconds = time.monotonic() - started
        live = len({task.file.file_path for task in table.scan().plan_files()})
        log = [*output.glob("*/*/metadata"), output / "catalog.db"]
    else:
        rows = len(pd.read_parquet(output))
        seconds = time.monotonic() - started
        live = None
        log = [output / "_spark_metadata"]
    on_disk = [p for p in output.rglob("*.parquet") if "_spark_metadata" not in p.parts and "metadata" not in p.parts]
    return {"files": live if live is not None else len(on_disk), "files on disk": len(on_disk),
            "log MB": size_mb(log), "pandas read s": seconds, "rows": rows}


def soak(broker: LocalKafka, topic: str, output_format: str, per_batch: int) -> dict[str, object]:
    out = WORK / "soak" / output_format
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    config = shipped_config(ZTF, broker, topic, out, output_format)
    data = yaml.safe_load(config.read_text())
    data["kafka"]["max_offsets_per_trigger"] = per_batch
    data["output"]["console"]["enabled"] = False
    config.write_text(yaml.safe_dump(data))
    seconds, _, log = run_measured([str(ROOT / "spark-submit.sh"), "jobs/stream.py", "--config", str(config),
                                    "--available-now"])
    durations = batch_seconds(log)
    edge = max(1, min(50, len(durations) // 10))
    result: dict[str, object] = {
        "format": output_format, "batches": len(durations), "seconds": seconds,
        "first batches s": statistics.median(durations[:edge]), "last batches s": statistics.median(durations[-edge:]),
        "before": measure(out / "alerts", output_format),
    }
    if output_format == "iceberg":
        started = time.monotonic()
        subprocess.run([str(ROOT / ".venv" / "bin" / "fink-spark"), "maintain", "--config", str(config),
                        "--snapshot-age-hours", "0", "--retain-snapshots", "1"],
                       check=True, capture_output=True)
        result["maintain s"] = time.monotonic() - started
        result["after maintain"] = measure(out / "alerts", output_format)
    return result


def report(results: list[dict[str, object]], batches: int, per_batch: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# Soak: {batches} micro-batches of {per_batch} ZTF alerts, {when}", "",
             "`bench/soak.py`: the shipped configuration, one topic drained with --available-now in micro-batches",
             f"of {per_batch} alerts, once into the Iceberg table and once into the plain Parquet sink, one after the",
             "other on this machine. Batch times are Spark's (triggerExecution), the median of the first and of the last",
             "tenth (at most 50 batches). Data files read: those a reader plans (pyiceberg's scan; Parquet: every",
             "file); files on disk include files no snapshot references any more. Log/metadata: Parquet's",
             "_spark_metadata; Iceberg's metadata/ and catalog. pandas reads: `pd.read_parquet(folder)`;",
             "`load_pyiceberg(warehouse).scan().to_pandas()`. After maintain: `fink-spark maintain",
             "--snapshot-age-hours 0 --retain-snapshots 1` once the stream stopped.", "",
             "| sink | batches | first batches (median s) | last batches (median s) | data files read | files on disk | "
             "log/metadata MB | pandas reads the output (s) | rows pandas sees |", "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for stage in ("before", "after maintain"):
            if stage not in result:
                continue
            figures: dict[str, float] = result[stage]  # type: ignore[assignment]
            name = f"{result['format']} after maintain ({result['maintain s']:.0f} s)" if stage != "before" else result["format"]
            lines.append(f"| {name} | {result['batches']} | {result['first batches s']:.2f} | {result['last batches s']:.2f} | "
                         f"{figures['files']} | {figures['files on disk']} | {figures['log MB']:.1f} | "
                         f"{figures['pandas read s']:.2f} | {figures['rows']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--alerts-per-batch", type=int, default=2)
    args = parser.parse_args()
    with LocalKafka(users={USER: PASSWORD}) as broker:
        topic = f"soak_ztf_{args.batches}x{args.alerts_per_batch}"
        publish_workload(broker, topic, ZTF, "ztf-2026", args.batches * args.alerts_per_batch, 1)
        results = [soak(broker, topic, output_format, args.alerts_per_batch) for output_format in ("iceberg", "parquet")]
    text = report(results, args.batches, args.alerts_per_batch)
    (ROOT / "bench" / "SOAK.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
