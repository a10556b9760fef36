# NanoLens: every target installs what it needs into .venv (Python) and .tools (buf, promtool, prometheus).
SHELL := /bin/bash
PY_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

.PHONY: help demo test up chromium tesseract proto proto-check proto-lint proto-breaking models bench lint tools dashboards docs clean

help:
	@echo "make demo    run the stack on loopback and analyse sample data into demo-output/"
	@echo "make test    run the whole test suite"
	@echo "make up      run the local stack in the foreground (Ctrl-C stops it)"
	@echo "make proto   regenerate gRPC stubs; make proto-check fails when they are stale"
	@echo "make models  rebuild every shipped model bundle from its seeds (hours: TEM)"
	@echo "make bench   run the benchmarks (figures into bench-output/)"
	@echo "make docs    regenerate the reference pages in docs/reference from the source"
	@echo "make lint    ruff, buf lint, hadolint"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,train,dev,local]'
	touch $@

$(BUF):
	npm install --silent --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

# promtool and prometheus: only the binaries from Debian's prometheus package, unpacked into
# .tools/bin (no install scripts, no daemon; the tests start prometheus themselves); root or sudo
# is needed only to refresh apt's package lists.
PROMTOOL := .tools/bin/promtool
PROMETHEUS := .tools/bin/prometheus
$(PROMTOOL) $(PROMETHEUS) &:
	@mkdir -p $(@D)
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then \
	  ln -sf "$$(command -v promtool)" $(PROMTOOL); ln -sf "$$(command -v prometheus)" $(PROMETHEUS); else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || command -v sudo || true); \
	  apt-cache show prometheus >/dev/null 2>&1 || $$SUDO apt-get update -qq; \
	  tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq prometheus 2>/dev/null) && \
	  dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/root && \
	  install -m 0755 $$tmp/root/usr/bin/promtool $(PROMTOOL) && \
	  install -m 0755 $$tmp/root/usr/bin/prometheus $(PROMETHEUS) && rm -rf $$tmp; fi
	@$(PROMTOOL) --version | head -1

# Debian's chromium: the job report's test opens the report in it, headless.
chromium:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || command -v sudo || true); \
	  apt-cache show chromium >/dev/null 2>&1 || $$SUDO apt-get update -qq; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# hyperspy 1.7.6's public test micrographs (Zeiss, FEI, Olympus, ImageJ, DM TIFFs) for the readers'
# tests, fetched once here (the tests never download; they skip without them).
HYPERSPY_FILES := build/hyperspy/tiff_files
$(HYPERSPY_FILES): $(VENV)/.installed
	$(PY) tests/hyperspy_files.py

# Debian's tesseract-ocr: reads the label of a micrograph's scale bar (nanolens_formats.scalebar).
tesseract:
	@command -v tesseract >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || command -v sudo || true); \
	  apt-cache show tesseract-ocr >/dev/null 2>&1 || $$SUDO apt-get update -qq; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; }

tools: $(BUF) $(PROMTOOL) $(PROMETHEUS) chromium tesseract $(HYPERSPY_FILES)

docs: $(VENV)/.installed
	$(PY) docs/generate.py

dashboards: $(VENV)/.installed
	$(PY) deploy/grafana/generate_dashboards.py

venv: $(VENV)/.installed

proto: $(VENV)/.installed
	$(PY) proto/generate.py

proto-check: $(VENV)/.installed
	$(PY) proto/generate.py --check

proto-lint: $(BUF)
	cd proto && ../$(BUF) lint

proto-breaking: $(BUF)
	cd proto && ../$(BUF) breaking --against '../.git#branch=main,subdir=proto'

# Every shipped bundle from its seeds: spectra in a minute, TEM about 4 h on 2 cores (resumable:
# its checkpoints and cached images stay in build/tem-models).
models: $(VENV)/.installed
	$(PY) -m nanolens_spectra.training.build_default
	$(PY) -m nanolens_tem.training.build_default --work build/tem-models
	$(PY) -m nanolens_lpem.training.build_default --work build/lpem-models
	$(PY) -m nanolens_sem.training.build_default --work build/sem-models
	$(PY) -m nanolens_sem.training.efficientnet --out build/sem-models/sem-efficientnet-lite0/1.0.0

test: $(VENV)/.installed tools
	$(PY) -m pytest -q

demo: $(VENV)/.installed tesseract
	$(VENV)/bin/nanolens demo --out demo-output

up: $(VENV)/.installed
	$(VENV)/bin/nanolens up

bench: $(VENV)/.installed
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m bench --out bench-output

lint: $(VENV)/.installed $(BUF)
	$(VENV)/bin/ruff check .
	cd proto && ../$(BUF) lint
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) .tools demo-output bench-output
