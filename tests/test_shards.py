"""``--shard I/N``: shards cover a folder exactly once, match the unsharded run, and stay put."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_cli import TINY, write_image

from scorecam_cli.cli import main
from scorecam_cli.images import find_inputs
from scorecam_cli.manifest import part_name, read_manifest
from scorecam_cli.shards import Shard, in_shard, parse_shard, shard_of

NAMES = ["a.png", "b.jpg", "c.png", "sub/d.png", "sub/e.png", "sub/deeper/f.png", "g h.png"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for n, name in enumerate(NAMES):
        write_image(root / name, height=40 + 4 * n, width=56)
    return root


def run(*args: str) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(main, ["run", *args, *TINY, "--format", "jsonl"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, records, result.stderr


def npy_files(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.load(p) for p in sorted(root.rglob("*.npy"))}


def test_parse_shard() -> None:
    assert parse_shard("2/7") == Shard(2, 7)
    for bad in ("7/7", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_shard_of_does_not_depend_on_the_process() -> None:
    """Not Python's salted hash(): another interpreter with another hash seed agrees."""
    names = [Path(name) for name in NAMES]
    here = [shard_of(name, 5) for name in names]
    code = (
        "import sys; from pathlib import Path; from scorecam_cli.shards import shard_of; "
        "print([shard_of(Path(n), 5) for n in sys.argv[1:]])"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, *NAMES], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_the_folder_once_and_match_the_unsharded_run(
    folder: Path, tmp_path: Path, count: int
) -> None:
    whole = tmp_path / "whole"
    code, records, _ = run(str(folder), "-o", str(whole))
    assert code == 0 and len(records) == len(NAMES)
    sharded = tmp_path / f"sharded-{count}"
    seen: list[object] = []
    for index in range(count):
        code, records, stderr = run(str(folder), "-o", str(sharded), "--shard", f"{index}/{count}")
        assert code == 0, stderr
        seen.extend(record["input"] for record in records)
        part = sharded / part_name(index, count)
        assert part.is_file() == bool(records)  # each shard writes its own part, if anything
    assert sorted(seen) == sorted(str(folder / name) for name in NAMES)  # exactly once
    expected, got = npy_files(whole), npy_files(sharded)
    assert got.keys() == expected.keys()
    for name, array in expected.items():  # batches differ, so float sums may differ in the last bit
        np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-6)
    merged = read_manifest(sharded)
    assert sorted(e["npy"] for e in merged.entries) == sorted(expected)
    assert not (sharded / "manifest.jsonl").exists()


def test_adding_a_file_moves_no_other_file(folder: Path) -> None:
    count = 3
    before = {item.relative: shard_of(item.relative, count) for item in find_inputs([str(folder)])}
    for extra in ("0.png", "aa.png", "sub/c2.png", "zz/zz.png"):
        write_image(folder / extra)
    after = {item.relative: shard_of(item.relative, count) for item in find_inputs([str(folder)])}
    assert len(after) == len(before) + 4
    assert {name: after[name] for name in before} == before
    shards = [list(in_shard(find_inputs([str(folder)]), Shard(i, count))) for i in range(count)]
    assert sorted(item.relative for shard in shards for item in shard) == sorted(after)


def test_eval_shards_add_up_to_the_whole(folder: Path) -> None:
    args = ["eval", str(folder), *TINY, "--method", "scorecam", "--steps", "2", "--format", "jsonl"]
    whole = CliRunner().invoke(main, args)
    assert whole.exit_code == 0, whole.stderr
    total = json.loads(whole.stdout)["images"]
    assert total == len(NAMES)
    counts = []
    for index in range(3):
        result = CliRunner().invoke(main, [*args, "--shard", f"{index}/3"])
        expected = len(list(in_shard(find_inputs([str(folder)]), Shard(index, 3))))
        if expected == 0:
            assert result.exit_code == 1  # nothing to measure: "no input could be read"
            continue
        assert result.exit_code == 0, result.stderr
        counts.append(json.loads(result.stdout)["images"])
        assert counts[-1] == expected
    assert sum(counts) == total


def test_bad_shard_is_a_usage_error(folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(folder), *TINY, "--shard", "3/3"])
    assert result.exit_code == 2
    assert "0 <= I < N" in result.stderr
