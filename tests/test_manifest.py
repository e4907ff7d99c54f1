"""The run manifest: one flushed line per map, torn lines skipped, the last line of a map wins."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import TINY, write_image

from scorecam_cli.cli import main
from scorecam_cli.manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    entry_from_record,
    part_name,
    read_manifest,
)


def entry(npy: str, probability: float = 0.5, **extra: object) -> dict[str, object]:
    return {
        "input": "x.png",
        "npy": npy,
        "overlay": npy + ".png",
        "probability": probability,
        **extra,
    }


def test_reader_keeps_the_last_line_of_each_map(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / MANIFEST_NAME) as writer:
        writer.append(entry("a.c1.npy", 0.1))
        writer.append(entry("b.c1.npy", 0.2))
        writer.append(entry("a.c1.npy", 0.3))  # --overwrite wrote a again
    manifest = read_manifest(tmp_path)
    assert [(e["npy"], e["probability"]) for e in manifest.entries] == [
        ("b.c1.npy", 0.2),
        ("a.c1.npy", 0.3),
    ]
    assert manifest.problems == []


def test_torn_last_line_is_reported_and_the_next_run_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    with ManifestWriter(path) as writer:
        writer.append(entry("a.c1.npy"))
    with path.open("a") as handle:
        handle.write('{"input": "b.png", "npy": "b.c')  # killed mid-line
    torn = read_manifest(tmp_path)
    assert [e["npy"] for e in torn.entries] == ["a.c1.npy"]
    assert len(torn.problems) == 1 and "torn line" in torn.problems[0]
    with ManifestWriter(path) as writer:
        writer.append(entry("c.c1.npy"))
    resumed = read_manifest(tmp_path)
    assert [e["npy"] for e in resumed.entries] == ["a.c1.npy", "c.c1.npy"]
    assert len(resumed.problems) == 1  # the torn line stays reported, nothing else is lost


def test_parts_of_a_sharded_run_are_merged(tmp_path: Path) -> None:
    for shard in range(3):
        with ManifestWriter(tmp_path / part_name(shard, 3)) as writer:
            writer.append(entry(f"{shard}.c1.npy"))
    assert sorted(e["npy"] for e in read_manifest(tmp_path).entries) == [
        "0.c1.npy",
        "1.c1.npy",
        "2.c1.npy",
    ]


def test_the_newest_line_wins_across_parts(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / part_name(0, 2)) as writer:  # read after manifest.jsonl
        writer.append(entry("a.c1.npy", 0.1, written_at=100.0))
    with ManifestWriter(tmp_path / MANIFEST_NAME) as writer:
        writer.append(entry("a.c1.npy", 0.9, written_at=200.0))  # an --overwrite run, later
        writer.append(entry("b.c1.npy", 0.5, written_at=50.0))
    manifest = read_manifest(tmp_path)
    assert [(e["npy"], e["probability"]) for e in manifest.entries] == [
        ("b.c1.npy", 0.5),
        ("a.c1.npy", 0.9),
    ]


def test_nan_is_refused_and_undecodable_names_round_trip(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # not UTF-8: a surrogate escape in Python
    with ManifestWriter(tmp_path / MANIFEST_NAME) as writer:
        with pytest.raises(ValueError):
            writer.append(entry("n.c1.npy", float("nan")))
        writer.append(entry("u.c1.npy", input=name))
    (only,) = read_manifest(tmp_path).entries
    assert os.fsencode(only["input"]) == b"caf\xe9.png"


def test_entry_paths_are_relative_to_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = {"input": "in/x.png", "overlay": str(out / "x.png.c3.overlay.png")}
    record |= {"npy": str(out / "x.png.c3.npy"), "heatmap": None}
    made = entry_from_record(record, out, (48, 80), {"alpha": 0.5})
    assert made["overlay"] == "x.png.c3.overlay.png" and made["npy"] == "x.png.c3.npy"
    assert made["original_size"] == [48, 80] and made["options"] == {"alpha": 0.5}


def test_run_writes_one_manifest_line_per_map(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for name in ("a.png", "sub/b.png"):
        write_image(inputs / name)
    out = tmp_path / "out"
    args = ["run", str(inputs), "-o", str(out), "--format", "jsonl", "-k", "2", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    manifest = read_manifest(out)
    assert len(manifest.entries) == len(records) == 4
    for record, made in zip(records, manifest.entries, strict=True):
        assert manifest.path_of(made, "npy") == Path(record["npy"])
        assert made["class_index"] == record["class_index"]
        assert made["original_size"] == [48, 80]
        assert made["options"]["input_size"] == [64, 64]
