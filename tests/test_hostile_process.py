"""Hostile use that is about the process (issue 10): FIFOs and devices that must not block, size
and pixel limits checked by peak memory, a decoder killed from outside, Ctrl-C, a closed stdout,
and SIGKILL at random points followed by ``--skip-existing``. All through the installed entry
point; every wait is on the child's records or its exit, never on a sleep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from hostile import (
    EXE,
    TINY,
    child_env,
    cli,
    errors,
    images,
    no_temp_files,
    one_error_naming,
    records,
)

from scorecam_cli.manifest import read_manifest


def start(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [EXE, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        bufsize=0,  # unbuffered: readline takes no more than a line, communicate gets the rest
    )


def finish(child: subprocess.Popen[bytes], read: list[bytes]) -> tuple[int, list[str], bytes]:
    """Wait for ``child``; its exit code, every stdout record (``read`` already) and stderr."""
    rest, err = child.communicate(timeout=120)
    lines = b"".join(read) + rest
    return child.returncode, records(lines), err


def peak_rss_mb(*args: str | Path) -> tuple[int, bytes, float]:
    """Run scorecam under a wrapper that reports its child's peak RSS (getrusage, in MB)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "sys.stderr.buffer.write(r.stderr)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, EXE, *map(str, args)],
        capture_output=True,
        env=child_env(),
        timeout=300,
    )
    code, kilobytes = done.stdout.split()
    return int(code), done.stderr, int(kilobytes) / 1024


# ---------------------------------------------------------------- 5: only regular files are read


def test_5_fifos_and_devices_never_block(tmp_path):
    (good,) = images(tmp_path / "in", 1)
    fifo = tmp_path / "in" / "pipe.png"
    os.mkfifo(fifo)
    named = cli("run", good, fifo, "/dev/zero", "-o", tmp_path / "out", *TINY, timeout=60)
    assert named.returncode == 1 and len(records(named.stdout)) == 1
    one_error_naming(named.stderr, "pipe.png", "not a regular file", "FIFO")
    one_error_naming(named.stderr, "/dev/zero", "not a regular file", "device")
    piped = cli("run", "-", "-o", tmp_path / "out2", *TINY, stdin=bytes(fifo) + b"\n", timeout=60)
    assert piped.returncode == 1
    one_error_naming(piped.stderr, "pipe.png", "FIFO")
    walked = cli("run", tmp_path / "in", "-o", tmp_path / "out3", *TINY, timeout=60)
    assert walked.returncode == 0 and len(records(walked.stdout)) == 1  # skipped in a folder


def test_5_files_over_the_size_limit_are_not_read(tmp_path):
    (good,) = images(tmp_path, 1)
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as file:
        file.write(good.read_bytes())
        file.truncate(3 * 2**30)  # 3 GB, sparse: no disk used
    code, err, peak = peak_rss_mb("run", good, sparse, "-o", tmp_path / "out", *TINY)
    assert code == 1
    one_error_naming(err, "huge.png", "over the limit of 256 MB", "--max-file-mb")
    assert peak < 2048  # reading it whole would take 3 GB
    small = cli("run", good, "-o", tmp_path / "out2", *TINY, "--max-file-mb", "0.001")
    one_error_naming(small.stderr, good.name, "--max-file-mb")


# ---------------------------------------------------------------- 6: decompression bombs


def test_6_pixel_bombs_are_refused_from_the_header(tmp_path):
    (good,) = images(tmp_path, 1)
    bomb = tmp_path / "bomb.png"
    assert cv2.imwrite(str(bomb), np.zeros((8000, 8000), np.uint8))  # 64 MP in 70 KB
    assert bomb.stat().st_size < 200_000
    _, _, control = peak_rss_mb("run", good, "-o", tmp_path / "control", *TINY)
    code, err, peak = peak_rss_mb("run", good, bomb, "-o", tmp_path / "out", *TINY)
    assert code == 1
    one_error_naming(err, "bomb.png", "64,000,000 pixels", "50,000,000", "--max-pixels")
    assert peak < control + 150  # decoding it would add 64 MB x (3 + 1 + 12) at least
    assert (tmp_path / "out" / f"{good.name}.c4.npy").is_file()
    assert not list((tmp_path / "out").glob("bomb*"))


# ---------------------------------------------------------------- 8: a decoder killed from outside


def test_8_a_killed_decoder_fails_its_images_and_the_run_goes_on(tmp_path):
    images(tmp_path / "in", 24)
    child = start("run", tmp_path / "in", "-o", tmp_path / "out", *TINY, "--image-batch", "2")
    assert child.stdout is not None
    first = child.stdout.readline()
    workers = _children(child.pid)
    assert workers, "the decoder worker is a child process"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    code, lines, err = finish(child, [first])
    failed = errors(err)
    assert code == 1 and failed and all("decoding process died" in line for line in failed)
    assert len(lines) + len(failed) == 24  # every input: a map or one line
    assert sorted(lines) == sorted(str(p) for p in (tmp_path / "out").glob("*.overlay.png"))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as file:
            found += [int(p) for p in file.read().split()]
    return found


# ---------------------------------------------------------------- 4, 13: Ctrl-C and a closed stdout


WORKER_THREADS = """
import sys, threading
if sys.argv[1] == "quiet":
    from scorecam_cli.handover import quiet_worker_threads
    quiet_worker_threads()
thread = threading.Thread(target=lambda: 1 / 0)
thread.start()
thread.join()
try:  # what multiprocessing's resource sharer does when the main process drops a connection
    raise ConnectionResetError(104, "Connection reset by peer")
except OSError:
    sys.excepthook(*sys.exc_info())
print("done")
"""


def test_a_decoding_worker_prints_no_traceback_from_its_threads():
    """Ctrl-C stops the decoding workers while torch's fd handover may be mid-handshake: the
    worker's resource-sharer thread must not print a traceback on the run's stderr."""
    for mode, traceback in (("plain", True), ("quiet", False)):
        done = subprocess.run([sys.executable, "-c", WORKER_THREADS, mode], capture_output=True,
                              env=child_env(), timeout=60)  # fmt: skip
        assert done.returncode == 0 and done.stdout == b"done\n", done
        assert (b"Traceback" in done.stderr) is traceback, done.stderr
        assert traceback or done.stderr == b""


def test_4_13_ctrl_c_reports_every_map_written_and_exits_130(tmp_path):
    images(tmp_path / "in", 30)
    out = tmp_path / "out"
    child = start("run", tmp_path / "in", "-o", out, *TINY, "--image-batch", "2")
    assert child.stdout is not None
    first = child.stdout.readline()
    child.send_signal(signal.SIGINT)
    code, lines, err = finish(child, [first])
    assert code == 130 and errors(err) == []
    written = sorted(str(p) for p in out.glob("*.overlay.png"))
    assert 1 <= len(lines) < 30 and sorted(lines) == written
    assert len(read_manifest(out).entries) == len(written)
    assert f"{len(written)} maps written".encode() in err
    no_temp_files(out)


def test_13_closed_stdout_exits_141_quietly(tmp_path):
    images(tmp_path / "in", 20)
    child = start("run", tmp_path / "in", "-o", tmp_path / "out", *TINY, "--image-batch", "2")
    assert child.stdout is not None and child.stderr is not None
    child.stdout.readline()
    child.stdout.close()  # as `| head -1` does
    err = child.stderr.read()
    assert child.wait(timeout=120) == 141
    assert errors(err) == [] and b"Broken pipe" not in err


# ---------------------------------------------------------------- the kill test


def test_sigkill_at_random_points_then_skip_existing_gives_every_map(tmp_path):
    folder = tmp_path / "in"
    images(folder, 40, 16, 20)
    # One image per batch: the same batches as the reference whatever was skipped, so the maps
    # are equal bit for bit (a batch of another size may round differently in the last bit).
    args = [*TINY, "--image-batch", "1", "--workers", "0"]
    reference = cli("run", folder, "-o", tmp_path / "ref", *args)
    assert reference.returncode == 0 and len(records(reference.stdout)) == 40
    out = tmp_path / "out"
    rng = np.random.default_rng(10)
    codes = []
    for _ in range(5):
        child = start("run", folder, "-o", out, *args, "--skip-existing")
        assert child.stdout is not None
        # Killed on progress, never on a clock: right after its k-th record (k = 0: before the
        # first), i.e. somewhere in the next map's pass or writes. At most 5 x 5 of the 40 maps
        # are reported before the kills, so every run has maps left to cut short on any machine.
        for _ in range(int(rng.integers(0, 6))):
            if not child.stdout.readline():
                break
        child.kill()
        child.communicate(timeout=120)
        codes.append(child.returncode)
    assert codes.count(-signal.SIGKILL) >= 3, codes  # most runs really were cut short
    final = cli("run", folder, "-o", out, *args, "--skip-existing")
    assert final.returncode == 0, final.stderr
    for npy in (tmp_path / "ref").glob("*.npy"):
        assert np.array_equal(np.load(out / npy.name), np.load(npy)), npy.name
        overlay = cv2.imread(str(out / npy.name.replace(".npy", ".overlay.png")))
        assert overlay is not None and overlay.shape == (16, 20, 3)
    manifest = read_manifest(out)
    assert len(manifest.entries) == 40
    assert {json.dumps(e["npy"]) for e in manifest.entries} == {
        json.dumps(p.name) for p in (tmp_path / "ref").glob("*.npy")
    }
    no_temp_files(out)
