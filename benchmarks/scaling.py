"""Images per second of ``scorecam run`` with the local engine and ``--engine ray`` (1, 2 actors).

Every configuration explains the same images (the sample photos, copied under new names up to
``--images``) in a fresh ``scorecam`` process, as a user would run it. Two rates per run:

- end to end: images / wall time of the whole command (start-up, model loads, Ray cluster);
- steady: images recorded after the first batch's records / the time from the first batch's
  records to the last record, i.e. the rate once every worker is up (what a long run
  approaches). A batch's records arrive together (within BURST_S), so the first batch's other
  records are not counted as made after it.

Each Ray run starts its own local cluster in its driver process with C = actors + 1 logical
CPUs (decoding needs one beside the actors; on a 2-core machine 2 actors therefore oversubscribe
the cores slightly); its start-up counts in the end-to-end rate. Ray actors run torch with one
thread each (Ray sets OMP_NUM_THREADS to the actor's CPUs); the local engine uses torch's default.

    python benchmarks/scaling.py                       # 40 images, embedded model, writes
                                                       # benchmarks/results/scaling.json
    python benchmarks/scaling.py --images 6 --model tinymodels:tiny --input-size 64 \
        --pythonpath tests --output /tmp/scaling.json  # a check that it runs (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="DEFAULT")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--image-batch", type=int, default=4)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pythonpath", default="", help="extra PYTHONPATH (module:factory)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/scaling.json")
    args = parser.parse_args()

    env = {**os.environ}
    if args.pythonpath:
        extra = str(Path(args.pythonpath).resolve())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="scorecam-scaling-") as tmp:
        images = make_images(Path(tmp) / "images", args.images)
        common = ["--model", args.model, "--weights", args.weights]
        common += ["--image-batch", str(args.image_batch)]
        if args.input_size:
            common += ["--input-size", str(args.input_size)]
        local = [str(BIN / "scorecam"), "--quiet", "run"]
        rows = [timed_run("local", local, images, Path(tmp) / "local", common, env)]
        for actors in args.actors:
            driver = [sys.executable, "-c", RAY_DRIVER, str(actors + 1)]
            extra = ["--engine", "ray", "--actors", str(actors)]
            out = Path(tmp) / f"ray-{actors}"
            engine = f"ray, {actors} actor(s)"
            rows.append(timed_run(engine, driver, images, out, common + extra, env))
    report = {
        "images": args.images,
        "model": args.model,
        "weights": args.weights,
        "input_size": args.input_size,
        "image_batch": args.image_batch,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "runs": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print("| engine | wall s | images/s end to end | images/s steady |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['engine']} | {row['wall_s']:.1f} | {row['images_per_s']:.3f} "
            f"| {row['steady_images_per_s']:.3f} |"
        )
    print(f"written {args.output}", file=sys.stderr)


def make_images(folder: Path, count: int) -> Path:
    """``count`` images: the sample photos, copied round-robin under numbered names."""
    samples = sorted(p for p in (ROOT / "sample_images").iterdir() if p.suffix.lower() != ".md")
    folder.mkdir(parents=True)
    for n in range(count):
        source = samples[n % len(samples)]
        shutil.copyfile(source, folder / f"{n:04d}-{source.name}")
    return folder


BURST_S = 0.5  # records this close to the first one belong to the first batch


def timed_run(
    engine: str, program: list[str], images: Path, out: Path, options: list[str], env: dict
) -> dict:
    """Run ``program`` (``scorecam run`` or the Ray driver) once; time it and each record."""
    command = [*program, str(images), "-o", str(out), *options]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    arrivals = [time.perf_counter() for _ in process.stdout]
    code = process.wait()
    wall = time.perf_counter() - start
    if code != 0 or not arrivals:
        raise SystemExit(f"{engine}: scorecam exited with {code} after {len(arrivals)} records")
    first_batch = [t for t in arrivals if t - arrivals[0] <= BURST_S]
    span = arrivals[-1] - first_batch[-1]
    later = len(arrivals) - len(first_batch)
    steady = later / span if later and span > 0 else float("nan")
    print(f"{engine}: {len(arrivals)} maps in {wall:.1f} s", file=sys.stderr)
    return {
        "engine": engine,
        "maps": len(arrivals),
        "wall_s": round(wall, 3),
        "images_per_s": round(len(arrivals) / wall, 4),
        "steady_images_per_s": round(steady, 4),
        "first_record_s": round(arrivals[0] - start, 3),
        "record_times_s": [round(t - start, 3) for t in arrivals],
    }


# A Ray driver with its own local cluster of CPUS logical CPUs, then `scorecam run ARGS...`
# in the same process (the Ray engine uses the cluster it finds).
RAY_DRIVER = """
import os, sys, ray
env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False,
         logging_level="WARNING", runtime_env={"env_vars": env})
from scorecam_cli.cli import main
main(["--quiet", "run", *sys.argv[2:]], prog_name="scorecam")
"""

if __name__ == "__main__":
    main()
