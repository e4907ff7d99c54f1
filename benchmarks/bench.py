#!/usr/bin/env python
"""Benchmark scorecam-cli's exact Score-CAM, per backend, against pytorch-grad-cam and torchcam.

For each case (model, layer, image, input size) this times, in one process, on one device:

* ours: ``scorecam_cli.cam.compute_cams`` (exact Score-CAM, softmax weighting) with its masked
  passes in each backend (torch, onnxruntime, openvino: those installed), best of a few batch
  sizes;
* pytorch-grad-cam's and torchcam's ``ScoreCAM`` (eager PyTorch), best of a few batch sizes;
* the limit: the passes ours ran, as plain forward passes of random inputs in the fastest
  backend at its best batch size (and the same for the K' non-constant channels).

Then, as a user runs it, whole processes: ``scorecam run coffee.png`` per backend with a cold
export cache and a warm one, against each peer in a fresh process. Every tool explains the same
tensor of the same model for the same class; maps are compared after bilinear upsampling and
min-max normalisation. The code lives in ``benchkit/`` (one module per job):

  cases.py      models, the HeadExposed wrapper, cases       timing.py    timed runs, the guard
  ours.py       ours per backend                             peers.py     grad-cam, torchcam
  limit.py      plain passes, the best batch size            agreement.py map agreement
  case_run.py   one case, every tool                         end_to_end.py whole processes
  report.py     the table, the machine, the versions         options.py   the command line
  sweep.py      threads x batch size x workers per backend (``benchmarks/sweep.py``)

Run ``python benchmarks/bench.py --help``. Needs ``pip install 'scorecam-cli[bench,fast]'``.
Results: a table on stdout and JSON under ``benchmarks/results/``; progress goes to stderr.
"""

from __future__ import annotations

import os
import sys

# pytorch-grad-cam draws a tqdm bar for every image; keep the benchmark's stderr readable.
os.environ.setdefault("TQDM_DISABLE", "1")

from benchkit.main import main

if __name__ == "__main__":
    sys.exit(main())
