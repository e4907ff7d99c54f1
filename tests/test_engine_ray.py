"""``--engine ray`` on a local Ray cluster started in this process: the same outputs, records and
errors as the local engine, and a run that survives the death of its model actor."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch
from click.testing import CliRunner
from test_cli import TESTS, TINY, write_image

from scorecam_cli.cli import main
from scorecam_cli.engines import Cluster, EngineJob
from scorecam_cli.engines import ray as ray_engine
from scorecam_cli.explainer import Explainer, build_explainer
from scorecam_cli.images import find_inputs
from scorecam_cli.manifest import read_manifest
from scorecam_cli.spec import ComputeSpec, ExplainSpec, ModelSpec
from scorecam_cli.writing import Explained, Failure, RunOptions

GOOD = ["a.png", "b.jpg", "sub/c.png", "sub/d.png", "sub/e.png"]
BAD = ["junk.png", "cut.jpg"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A 2-CPU local cluster whose workers import tests/ (tinymodels) like this process."""
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        object_store_memory=200 * 1024**2,
        runtime_env={"env_vars": env},
    )
    yield
    ray.shutdown()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for n, name in enumerate(GOOD):
        write_image(root / name, height=36 + 5 * n, width=70 - 3 * n)
    (root / "junk.png").write_bytes(b"not an image at all")
    jpeg = (root / "b.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # no end-of-image marker
    return root


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["run", *args, *TINY, "--format", "jsonl"])


def output_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def comparable(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """A record with its output paths relative to OUT and its probability aside."""
    out = {k: os.path.relpath(v, root) if k in ("overlay", "npy") else v for k, v in record.items()}
    out.pop("probability")
    return out


def test_ray_engine_matches_the_local_engine(
    cluster: None, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative inputs and outputs mean the same to the workers
    folder, local_out, ray_out = Path(folder.name), Path("local"), Path("ray")
    local = invoke(str(folder), "-o", str(local_out), "--image-batch", "2")
    remote = invoke(str(folder), "-o", str(ray_out), "--image-batch", "2", "--engine", "ray")
    assert local.exit_code == 1 and remote.exit_code == 1  # the bad files failed
    assert output_files(ray_out) == output_files(local_out)
    assert len([f for f in output_files(ray_out) if f.endswith(".npy")]) == len(GOOD)
    for name in output_files(local_out):
        if name.endswith(".npy"):
            np.testing.assert_allclose(
                np.load(ray_out / name), np.load(local_out / name), rtol=1e-5, atol=1e-5
            )
    local_records = [json.loads(line) for line in local.stdout.splitlines()]
    ray_records = [json.loads(line) for line in remote.stdout.splitlines()]
    key = lambda r: r["npy"]  # noqa: E731  (Ray's records come in completion order)
    local_records.sort(key=key)
    ray_records.sort(key=key)
    assert [comparable(r, ray_out) for r in ray_records] == [
        comparable(r, local_out) for r in local_records
    ]
    for mine, theirs in zip(ray_records, local_records, strict=True):
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=2e-6)
    errors = [line for line in remote.stderr.splitlines() if line.startswith("scorecam: error:")]
    assert sorted(errors) == sorted(
        line for line in local.stderr.splitlines() if line.startswith("scorecam: error:")
    )
    assert Counter(name for name in BAD for line in errors if str(folder / name) in line) == {
        name: 1 for name in BAD
    }
    local_manifest = sorted(read_manifest(local_out).entries, key=key)
    ray_manifest = sorted(read_manifest(ray_out).entries, key=key)
    assert all(e["written_at"] > 0 for e in ray_manifest + local_manifest)
    same = {"probability": 0, "written_at": 0}  # float noise, and when each line was written
    assert [{**e, **same} for e in ray_manifest] == [{**e, **same} for e in local_manifest]


@dataclasses.dataclass(frozen=True)
class CrashingExplainer(Explainer):
    """Kills its own process (SIGKILL: no clean-up) on its second batch, the first time only."""

    crash_marker: str = ""

    def explain(self, batch: torch.Tensor) -> Any:
        _calls.append(len(batch))
        if len(_calls) == 2:
            try:
                with open(self.crash_marker, "x") as marker:  # the first actor to get here
                    marker.write(str(os.getpid()))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().explain(batch)


_calls: list[int] = []  # explain() calls in this actor process


def tiny_spec(device: str = "cpu", model: str = "tinymodels:tiny") -> ExplainSpec:
    return ExplainSpec(
        ModelSpec(model), input_size=(64, 64), compute=ComputeSpec(device, backend="torch")
    )


def crashing_explainer(marker: str, device: str) -> Explainer:
    base = build_explainer(tiny_spec(device))
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Explainer)}
    return CrashingExplainer(**fields, crash_marker=marker)


def test_a_killed_actor_is_restarted_and_every_output_written(
    cluster: None, folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "killed.pid"
    out = tmp_path / "out"
    factory = functools.partial(crashing_explainer, str(marker))
    driver = crashing_explainer(str(tmp_path / "never"), "cpu")
    options = RunOptions(output_dir=out, images_per_batch=1, workers=0)
    job = EngineJob(tiny_spec(), driver, options, Cluster(actors=1))
    events = list(ray_engine.run(job, find_inputs([str(folder)]), factory=factory))
    assert marker.is_file()  # the actor really died mid-run (on its second of 7 batches)
    explained = Counter(
        Path(e.input).relative_to(folder).as_posix() for e in events if isinstance(e, Explained)
    )
    failed = Counter(Path(e.input).name for e in events if isinstance(e, Failure))
    assert explained == {name: 1 for name in GOOD}
    assert failed == {name: 1 for name in BAD}
    npys = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert len(npys) == len(GOOD)
    assert len(list(out.rglob("*.overlay.png"))) == len(GOOD)
    assert not list(out.rglob(".*.tmp"))  # nothing half-written left behind
    assert sorted(e["npy"] for e in read_manifest(out).entries) == npys


def test_actors_build_their_explainer_from_the_spec_without_the_cli(
    cluster: None, folder: Path, tmp_path: Path
) -> None:
    """The actors' model refuses to be built where scorecam_cli.cli is imported; this process
    (the driver, which imported the CLI) builds its own explainer from another spec."""
    driver = build_explainer(tiny_spec())
    options = RunOptions(output_dir=tmp_path / "out", workers=0)
    job = EngineJob(tiny_spec(model="tinymodels:tiny_without_cli"), driver, options)
    events = list(ray_engine.run(job, find_inputs([str(folder)])))
    assert sorted(e.input for e in events if isinstance(e, Explained)) == sorted(
        str(folder / name) for name in GOOD
    )


def test_more_cpu_actors_than_the_cluster_can_hold_is_one_line(
    cluster: None, folder: Path, tmp_path: Path
) -> None:
    result = invoke(str(folder), "-o", str(tmp_path / "o"), "--engine", "ray", "--actors", "2")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "--actors 2 needs more than 2 CPUs" in result.stderr.strip().splitlines()[-1]


def test_the_local_engine_imports_no_ray(folder: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from click.testing import CliRunner; from scorecam_cli.cli import main; "
        "r = CliRunner().invoke(main, ['run', *sys.argv[1:]]); "
        "print(r.exit_code, sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    args = [str(folder / "a.png"), "-o", str(tmp_path / "o"), *TINY, "--shard", "0/1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.stdout.split(maxsplit=1) == ["0", "[]\n"], out.stderr


def no_model_here(device: str) -> Explainer:
    raise RuntimeError(f"cannot import mypkg.nets on this node ({device})")


def test_an_actor_that_cannot_load_the_model_stops_the_run_in_one_line(
    cluster: None, folder: Path, tmp_path: Path
) -> None:
    driver = crashing_explainer(str(tmp_path / "never"), "cpu")
    options = RunOptions(output_dir=tmp_path / "out", workers=0)
    job = EngineJob(tiny_spec(), driver, options)
    with pytest.raises(ray_engine.RayFailure) as failure:
        list(ray_engine.run(job, find_inputs([str(folder)]), factory=no_model_here))
    message = str(failure.value)
    assert "\n" not in message
    assert message.endswith(
        "RuntimeError: cannot import mypkg.nets on this node (cpu) (details: the Ray logs)"
    )


def test_ray_decoding_honours_the_run_s_file_limits(tmp_path: Path) -> None:
    """--max-pixels and --max-file-mb reach the Ray engine's decode tasks, as in the local one."""
    from scorecam_cli.images import Limits

    image = write_image(tmp_path / "a.png", height=40, width=50)  # 2,000 pixels
    row = {"index": 0, "path": os.fsencode(image), "relative": b"a.png"}
    args = ((16, 16), (0.5,) * 3, (0.5,) * 3, os.getcwd())
    assert ray_engine._decode_row(row, *args, Limits())["error"] == ""
    refused = ray_engine._decode_row(row, *args, Limits(max_pixels=1000))
    assert "--max-pixels" in refused["error"] and "a.png" in refused["error"]


def test_quiet_leaves_only_our_error_lines_on_stderr(folder: Path, tmp_path: Path) -> None:
    """Under --quiet neither Ray's Python logs nor its core worker's native log lines reach
    stderr; the errors of the inputs that failed in the cluster still do."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
    }
    exe = Path(sys.executable).parent / "scorecam"
    args = ["-q", "run", str(folder), "-o", str(tmp_path / "o"), *TINY, "--engine", "ray"]
    ran = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 1
    lines = ran.stderr.splitlines()
    assert lines and all(line.startswith("scorecam: error: ") for line in lines), ran.stderr
    assert sorted(Path(line.split(": ")[2]).name for line in lines) == sorted(BAD)
    assert len(ran.stdout.splitlines()) == len(GOOD)
