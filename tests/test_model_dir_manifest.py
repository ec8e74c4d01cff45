"""The file manifest of a version (corolla.model_dir): written at publication, verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corolla.demo_model import write_demo_version
from corolla.errors import Code, CorollaError, InvalidArgument
from corolla.model_dir import METADATA_FILE, files_from_json, read_metadata
from corolla.model_publish import hash_file, verify_files


def test_publication_seals_every_file(tmp_path: Path) -> None:
    vdir = Path(write_demo_version(str(tmp_path / "m"), 1, 16))
    (vdir / "extra").mkdir()  # publication happened already: a later file is not covered
    md = read_metadata(vdir)
    listed = {p.relative_to(vdir).as_posix() for p in vdir.rglob("*") if p.is_file()}
    assert set(md.files) == listed - {METADATA_FILE}
    assert md.files["model.onnx"] == hash_file(vdir / "model.onnx")
    verify_files(vdir, md.files)


def test_verify_names_what_differs(tmp_path: Path) -> None:
    vdir = Path(write_demo_version(str(tmp_path / "m"), 1, 16))
    md = read_metadata(vdir)
    data = bytearray((vdir / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (vdir / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(CorollaError) as e:
        verify_files(vdir, md.files)
    assert e.value.code == Code.DATA_LOSS and "model.onnx: SHA-256" in e.value.message
    (vdir / "model.onnx").write_bytes(bytes(data[:-10]))
    with pytest.raises(CorollaError, match=r"model\.onnx: .* bytes, the manifest says"):
        verify_files(vdir, md.files)
    (vdir / "model.onnx").unlink()
    with pytest.raises(CorollaError, match=r"model\.onnx: missing"):
        verify_files(vdir, md.files)


def test_metadata_without_manifest_still_loads(tmp_path: Path) -> None:
    vdir = Path(write_demo_version(str(tmp_path / "m"), 1, 16))
    doc = json.loads((vdir / METADATA_FILE).read_text())
    del doc["files"]
    (vdir / METADATA_FILE).write_text(json.dumps(doc))
    assert read_metadata(vdir).files == {}


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a//b", "./a", "corolla.json", "",
                                  "a\\b"])
def test_manifest_names_stay_inside_the_version(name: str) -> None:
    with pytest.raises(InvalidArgument):
        files_from_json({name: {"size": 1, "sha256": "0" * 64}})


@pytest.mark.parametrize("entry", [{"size": -1, "sha256": "0" * 64}, {"size": 1},
                                   {"size": 1, "sha256": "xyz"}, "nope"])
def test_malformed_manifest_entries(entry: object) -> None:
    with pytest.raises(InvalidArgument):
        files_from_json({"model.onnx": entry})
