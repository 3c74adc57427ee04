"""The job's own files beside the checkpoint, on local paths and file:// URIs."""

from __future__ import annotations

from pathlib import Path

from fink_spark.state import CheckpointFiles


def test_checkpoint_files_round_trip(tmp_path: Path) -> None:
    for location in (str(tmp_path / "a"), f"file://{tmp_path / 'b'}"):
        files = CheckpointFiles.at(location)
        assert files.read("fink_spark/x.json") is None and files.names("alerts/commits") == []
        files.write("fink_spark/x.json", '{"k": 1}')
        files.write("alerts/commits/0", "v1")
        files.write("alerts/commits/1", "v1")
        assert files.read("fink_spark/x.json") == '{"k": 1}'
        assert sorted(files.names("alerts/commits")) == ["0", "1"]
        files.write("fink_spark/x.json", '{"k": 2}')  # replaced whole, through a temporary file that is gone
        assert files.read("fink_spark/x.json") == '{"k": 2}' and files.names("fink_spark") == ["x.json"]
    assert (tmp_path / "b" / "fink_spark" / "x.json").read_text() == '{"k": 2}'
