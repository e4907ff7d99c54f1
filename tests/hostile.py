"""Helpers for the hostile-input tests: run the installed ``scorecam`` in a child process (bytes in,
bytes out, OMP_NUM_THREADS=1), and the checks every case shares."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

TESTS = Path(__file__).parent
TINY = ["--model", "tinymodels:tiny", "--input-size", "64"]
EXE = shutil.which("scorecam", path=str(Path(sys.executable).parent)) or "scorecam"


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }


def cli(
    *args: str | Path, stdin: bytes | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """The installed entry point; a hang fails the test through ``timeout`` (a generous guard)."""
    return subprocess.run(
        [EXE, *map(str, args)],
        input=stdin,
        capture_output=True,
        env=child_env(),
        cwd=cwd,
        timeout=timeout,
    )


def images(folder: Path, count: int, height: int = 24, width: int = 32) -> list[Path]:
    """``count`` seeded random PNGs ``im00.png``... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = []
    for n in range(count):
        path = folder / f"im{n:02d}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def errors(stderr: bytes) -> list[str]:
    """The error lines of stderr; fails on a traceback."""
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert "Aborted!" not in text, text
    return [line for line in text.splitlines() if "error:" in line.lower()]


def one_error_naming(stderr: bytes, name: str, *words: str) -> str:
    """The one error line that names ``name``; it holds every one of ``words``."""
    lines = [line for line in errors(stderr) if name in line]
    assert len(lines) == 1, stderr.decode("utf-8", "replace")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def records(stdout: bytes) -> list[str]:
    return stdout.decode("utf-8", "surrogateescape").splitlines()


def no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]
    assert not left, left
