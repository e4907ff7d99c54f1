# scorecam-cli: `make install` then `make test`. Everything runs from the .venv it creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision come first, by exact version, so pip takes the builds this machine
# keeps on disk; pyproject.toml itself asks only for ranges. Override for another machine.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# Every optional extra the tests exercise: backends (fast), Ray, timm; bench adds the peers.
EXTRAS ?= dev,fast,ray,timm

.PHONY: install system-packages install-bench test lint bench bench-full bench-report bench-vit bench-localisation demo clean

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

test:
	$(BIN)/python -m pytest -q
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

demo:
	$(BIN)/scorecam run sample_images/ -o scorecam-out/

clean:
	rm -rf scorecam-out .pytest_cache .mypy_cache .ruff_cache
