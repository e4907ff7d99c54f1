"""A run killed mid-way (SIGKILL) leaves a manifest that lists exactly the maps on disk, and a
``--skip-existing`` run completes the rest. Paths go in through stdin so the test decides how far
the run can get: it cannot finish while stdin is open, and it is killed on its stdout records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from test_cli import TESTS, TINY, scorecam, write_image

from scorecam_cli.manifest import read_manifest

IMAGES = 24


def start_run(cwd: Path, *args: str) -> subprocess.Popen[str]:
    exe = shutil.which("scorecam", path=str(Path(sys.executable).parent)) or "scorecam"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [exe, "run", "-", "-o", "out", "--format", "jsonl", "--image-batch", "1", *TINY, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )


def feed(process: subprocess.Popen[str], names: list[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(f"{name}\n" for name in names))
    process.stdin.flush()


def read_records(process: subprocess.Popen[str], count: int) -> list[dict[str, object]]:
    assert process.stdout is not None
    records = []
    for _ in range(count):
        line = process.stdout.readline()
        assert line, "the run ended before writing its records"
        records.append(json.loads(line))
    return records


def maps_on_disk(out: Path) -> set[str]:
    """The finished maps: an ``.npy`` is written last (temporary files start with a dot)."""
    return {str(p.relative_to(out)) for p in out.rglob("*.npy") if not p.name.startswith(".")}


def test_killed_run_lists_exactly_its_maps_and_resumes(tmp_path: Path) -> None:
    names = [f"in/img{n:02d}.png" for n in range(IMAGES)]
    for name in names:
        write_image(tmp_path / name)
    process = start_run(tmp_path)
    try:
        feed(process, names[:3])  # one batch stays pending in the pipeline: 2 records come out
        first = read_records(process, 2)
        feed(process, names[3:14])  # the run is busy on these when it is killed
        first += read_records(process, 1)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()

    out = tmp_path / "out"
    on_disk = maps_on_disk(out)
    manifest = read_manifest(out)
    listed = {str(entry["npy"]) for entry in manifest.entries}
    assert listed == on_disk  # exactly the finished maps, none lost, none invented
    assert 3 <= len(on_disk) <= 14 < IMAGES
    assert {r["npy"] for r in first} <= {f"out/{n}" for n in on_disk}
    assert all("torn line" in p for p in manifest.problems) and len(manifest.problems) <= 1
    for entry in manifest.entries:  # no torn record: every key there, every file there
        assert {"input", "overlay", "class_index", "probability", "options"} <= entry.keys()
        assert (out / entry["overlay"]).is_file()
    assert read_manifest(out, require_files=True).entries == manifest.entries

    resumed = scorecam(
        "run", "-", "-o", "out", "--skip-existing", *TINY, stdin="\n".join(names), cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(resumed.stdout.splitlines()) == IMAGES - len(on_disk)  # only the new maps
    final = read_manifest(out, require_files=True)
    assert len(final.entries) == IMAGES
    assert {str(e["npy"]) for e in final.entries} == maps_on_disk(out)
    assert {e["input"] for e in final.entries} == set(names)  # as given, relative to the run
    for entry in final.entries:  # found from any working directory through input_abspath
        assert final.input_of(entry) == tmp_path / entry["input"]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len([line for line in lines if line]) == IMAGES + len(manifest.problems)


def test_overwrite_supersedes_older_lines_and_skip_existing_appends_nothing(
    tmp_path: Path,
) -> None:
    names = [f"in/img{n}.png" for n in range(3)]
    for name in names:
        write_image(tmp_path / name)
    out = tmp_path / "out"

    def run(*args: str) -> None:
        done = scorecam("run", "in", "-o", "out", *TINY, *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr

    run("--alpha", "0.5")
    run("--alpha", "0.25", "--overwrite")
    run("--skip-existing")
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 6  # 3 maps twice; the resumed run added none
    manifest = read_manifest(out, require_files=True)
    assert len(manifest.entries) == 3 and manifest.problems == []
    assert {entry["options"]["alpha"] for entry in manifest.entries} == {0.25}
