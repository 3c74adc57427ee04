"""fink-spark installed as users install it: into a fresh environment, run from another
folder, with no checkout, no .jars/ and no scripts/setup.sh behind it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import sample
from reference import read_alerts

from fink_spark.config.session import build_session
from fink_spark.errors import ConfigError
from fink_spark.paths import PROJECT_ROOT, class_data_archive, driver_java_options


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with fink-spark built and installed from the checkout. Its
    dependencies (pyspark and the others, 400 MB) are this environment's, through a .pth
    file, so that the test downloads nothing but the build backend."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)  # noqa: SLF001 - the base interpreter
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", str(PROJECT_ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def run_installed(venv: Path, folder: Path, *command: str) -> subprocess.CompletedProcess[str]:
    folder.mkdir(exist_ok=True)
    # No connector jars at hand: the installed command has Spark resolve them into its user cache.
    env = {**os.environ, "FINK_SPARK_JARS": str(folder / "no-jars"), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYSPARK_PYTHON", None)
    return subprocess.run(list(command), cwd=folder, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.subprocess
def test_the_command_is_installed_with_its_schemas(installed: Path, tmp_path: Path) -> None:
    where = run_installed(installed, tmp_path, "python", "-c", "import fink_spark.paths as p; print(p.__file__, p.SCHEMAS_DIR)")
    module, schemas = where.stdout.split()
    assert module.startswith(str(installed)) and Path(schemas, "ztf", "fink_ztf_transfer_2026-03.avsc").is_file()
    help_text = run_installed(installed, tmp_path, "fink-spark", "--help").stdout
    for command in ("stream", "reprocess", "explore", "discover"):
        assert f"    {command}" in help_text


@pytest.mark.subprocess
def test_reprocess_count_only_and_the_python_api_from_another_folder(installed: Path, tmp_path: Path) -> None:
    inputs = [str(sample("ztf-2026")), str(sample("ztf-0p2"))]
    alerts = read_alerts(sample("ztf-2026")) + read_alerts(sample("ztf-0p2"))
    bright = sum(alert["candidate"]["magpsf"] <= 18.0 for alert in alerts)
    config = tmp_path / "elsewhere" / "reprocess.yaml"
    config.parent.mkdir()
    config.write_text("survey: ztf\noutput: {format: parquet, table: {path: out, checkpoint: chk}}\n"
                      "filters: [{preset: magnitude, max: 18.0}]\n")

    counted = run_installed(installed, config.parent, "fink-spark", "reprocess", "--count-only", "--master", "local[2]",
                            "--config", str(config), "--input", *inputs)
    assert counted.returncode == 0, counted.stderr[-3000:]
    assert counted.stdout.splitlines()[-1] == f"{bright} alerts pass the filters"
    assert not (config.parent / "out").exists()

    example = run_installed(installed, config.parent, "python", str(PROJECT_ROOT / "examples" / "saved_alerts.py"), *inputs)
    assert example.returncode == 0, example.stderr[-3000:]
    lines = example.stdout.splitlines()
    assert lines[0] == f"{len(alerts)} alerts, {bright} brighter than magnitude 18"
    brightest = sorted((alert["candidate"]["magpsf"], alert["objectId"]) for alert in alerts)[:3]
    assert [line.split()[0] for line in lines[1:]] == [object_id for _, object_id in brightest]


def test_without_java_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="Spark needs Java 17 or 21, and none was found: install a JDK"):
        build_session("fink-spark-without-java", "local[1]")


@pytest.mark.subprocess
def test_connectors_that_cannot_be_resolved_are_one_clear_error(tmp_path: Path) -> None:
    """No .jars/ and Maven Central cannot serve the connectors (offline, a firewall): a
    version that does not exist stands for it, with an empty Ivy cache."""
    run = ("from fink_spark.cli import run_cli; from fink_spark.config.session import local_session; "
           "run_cli(lambda: local_session('fink-spark-offline', 'local[1]', conf={"
           f"'spark.jars.packages': 'org.apache.spark:spark-avro_2.13:0.0.404', 'spark.jars.ivy': '{tmp_path / 'ivy'}'}}))")
    result = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, cwd=PROJECT_ROOT,
                            env={**os.environ, "FINK_SPARK_JARS": str(tmp_path / "no-jars")}, timeout=300)
    assert result.returncode == 2
    assert "unresolved dependency: org.apache.spark#spark-avro_2.13;0.0.404" in result.stderr  # Ivy's own lines
    assert result.stderr.splitlines()[-1].startswith(
        "fink-spark: Spark did not start: it could not resolve its Kafka and Avro connectors from Maven Central")
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_jobs_start_from_the_class_archive_and_skip_one_java_cannot_use(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """scripts/setup.sh records the classes a job loads; the driver JVM then reads them from
    that archive. An archive Java cannot use (another JDK or pyspark) is skipped, silently."""
    assert class_data_archive().is_file(), "scripts/setup.sh did not record the class archive"
    assert f"-XX:SharedArchiveFile={class_data_archive()}" in driver_java_options(tmp_path / "log4j2.properties")

    monkeypatch.setenv("FINK_SPARK_JARS", str(tmp_path))
    log_config = tmp_path / "log4j2.properties"
    assert driver_java_options(log_config) == f"-Dlog4j2.configurationFile=file:{log_config}"  # none made
    class_data_archive().parent.mkdir()
    class_data_archive().write_bytes(b"not a class archive")
    options = driver_java_options(log_config).split()
    assert f"-XX:SharedArchiveFile={tmp_path / 'cds' / 'driver.jsa'}" in options
    result = subprocess.run(["java", *options, "-version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr.splitlines()[0].startswith(("openjdk version", "java version"))
    assert "archive" not in result.stderr.lower()
