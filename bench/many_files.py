"""Reprocess a folder of many one-alert Avro files (fink-client --save layout) and measure it.

    .venv/bin/python bench/many_files.py [--files 20000] [--driver-memory 1g]

Writes the files (real ZTF alerts replicated with new ids) under .work/bench/, runs
`./spark-submit.sh jobs/reprocess.py` on them in local[2] mode under /usr/bin/time, and
prints files/s, alerts/s and the driver's peak memory (resident set).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fastavro  # noqa: E402

from fink_spark.paths import SAMPLE_DIR, SCHEMAS_DIR  # noqa: E402
from fink_spark.surveys import ZTF  # noqa: E402
from fink_spark.testing.publisher import replicate  # noqa: E402


def write_files(folder: Path, count: int) -> None:
    sources = []
    for path in sorted((SAMPLE_DIR / "ztf-0p2").glob("*.avro")):
        with path.open("rb") as handle:
            reader = fastavro.reader(handle)
            sources.append((fastavro.parse_schema(reader.writer_schema), next(iter(reader))))
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        schema, record = sources[index % len(sources)]
        alert = replicate(record, ZTF, index // len(sources))
        with (folder / f"{alert['objectId']}_{alert['candid']}.avro").open("wb") as handle:
            fastavro.writer(handle, schema, [alert])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--driver-memory", default="1g")
    args = parser.parse_args()
    work = ROOT / ".work" / "bench" / "many_files"
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    write_files(work / "saved", args.files)
    print(f"wrote {args.files} one-alert files in {time.monotonic() - started:.0f} s")
    config = work / "job.yaml"
    config.write_text(json.dumps({
        "survey": "ztf", "schema": str(SCHEMAS_DIR / "ztf" / "fink_ztf_transfer_2026-03.avsc"),
        "output": {"format": "parquet", "table": {"path": str(work / "out"), "checkpoint": str(work / "chk")}},
    }))
    command = ["/usr/bin/time", "-v", str(ROOT / "spark-submit.sh"), "--master", "local[2]",
               "--driver-memory", args.driver_memory, "jobs/reprocess.py", "--config", str(config),
               "--input", str(work / "saved")]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if "reprocess: batch" in line:
            print(line)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(result.stdout[-2000:] + result.stderr[-3000:])
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    written = re.search(r"(\d+) alerts written", result.stdout).group(1)
    print(f"reprocessed {written} alerts from {args.files} files in {elapsed:.0f} s (with Spark start-up): "
          f"{args.files / elapsed:.0f} files/s, {int(written) / elapsed:.0f} alerts/s, "
          f"driver peak RSS {peak_kib / 1024:.0f} MiB with --driver-memory {args.driver_memory}")
    shutil.rmtree(work / "saved")


if __name__ == "__main__":
    main()
