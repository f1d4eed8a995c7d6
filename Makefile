# make demo: adapt the shipped noto-32 model to 10 OpenMoji shots, sample, print where results went.
# make test: the test suite. Both create .venv and install what they need (system packages as root).
# make bench: the quality and speed benchmarks; runs for hours (make bench BENCH_FLAGS=--quick: about 20 min).
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
EMOJIONE_DIR := /usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png
NOTO_FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
CHROMEDRIVER := /usr/bin/chromedriver
BENCH_FLAGS ?=
# denoising-diffusion-pytorch releases the converter is tested against (tests/lucidrains_reference.py): one
# environment cannot hold two versions, so each goes to its own folder, without its dependencies (torchvision
# would replace the CPU torch; the tests stub it).
DD_PYTORCH_VERSIONS := 0.28.0 2.3.4

.PHONY: demo test system bench bench-notice clean

demo: $(STAMP) system
	$(VENV)/bin/tenshot demo

test: $(STAMP) system
	$(VENV)/bin/pytest -q

# Quality (bench/quality.py: every method on every target, metrics) then speed (bench/speed.py: step time,
# peak memory and sampling throughput per method at 32 and 64 px); results in bench/results/. BENCH_FLAGS are
# bench/quality.py's; bench/speed.py takes only their --quick.
bench: bench-notice $(STAMP) system
	$(VENV)/bin/python bench/quality.py $(BENCH_FLAGS)
	$(VENV)/bin/python bench/speed.py $(filter --quick,$(BENCH_FLAGS))

bench-notice:
	@echo "make bench runs for hours (make bench BENCH_FLAGS=--quick: about 20 minutes, 15 of quality and 2 of speed); results go to bench/results/"

# Debian packages, installed only where missing: the Noto Color Emoji font, EmojiOne 2's PNGs
# unpacked from ruby-gemojione with dpkg -x (installing it would pull Ruby), and headless Chromium with
# its WebDriver (the test that opens report.html in a browser).
system:
	@if [ ! -f $(NOTO_FONT) ] || [ ! -d $(EMOJIONE_DIR) ] || [ ! -x $(CHROMEDRIVER) ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install fonts-noto-color-emoji, ruby-gemojione's PNGs, chromium and chromium-driver"; exit 2; fi; \
	  apt-get update -qq; \
	  [ -f $(NOTO_FONT) ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji >/dev/null; \
	  [ -x $(CHROMEDRIVER) ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  if [ ! -d $(EMOJIONE_DIR) ]; then \
	    tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq ruby-gemojione) && dpkg -x $$tmp/ruby-gemojione_*.deb / && rm -rf $$tmp; \
	  fi; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	for version in $(DD_PYTORCH_VERSIONS); do \
	  $(VENV)/bin/pip install -q --no-deps --target $(VENV)/dd-pytorch/$$version denoising-diffusion-pytorch==$$version || exit 1; \
	done
	touch $(STAMP)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
