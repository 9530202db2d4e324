# Two commands for a newcomer: `make book` builds the rendered book,
# `make test` runs every check. Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The book's numbers are torch 2.14.1's (requirements.txt). qlib is also exact with torch 2.13.0:
# its tests and every chapter's code run against that release too, in a second environment.
OLD_TORCH := 2.13.0
VENV_OLD := .venv-$(OLD_TORCH)
STAMP_OLD := $(VENV_OLD)/.installed
TORCH := $(shell sed -n 's/^torch==//p' requirements.txt)
# The notebook kernel is started as `python`: make it the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)

.PHONY: venv venv-old book test lint unit unit-old notebooks notebooks-avx2 notebooks-old book-strict pages browser \
	chapter chapters fmt bench clean history

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# the same pins, with torch at $(OLD_TORCH)
$(STAMP_OLD): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_OLD)
	$(VENV_OLD)/bin/python -m pip install --quiet --upgrade pip
	sed 's/^torch==.*/torch==$(OLD_TORCH)/' requirements.txt > $(VENV_OLD)/requirements.txt
	$(VENV_OLD)/bin/python -m pip install --quiet -r $(VENV_OLD)/requirements.txt
	$(VENV_OLD)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP_OLD)

venv: $(STAMP)
venv-old: $(STAMP_OLD)

## make book: the rendered book in _build/html/index.html
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

## make test: lint; qlib's tests on both torch releases; every chapter under nbval (torch $(TORCH))
## and executed on torch $(OLD_TORCH); the book build; the book in a browser
test: lint unit unit-old notebooks notebooks-avx2 notebooks-old book-strict pages browser
	@echo "make test: all checks passed"

lint: $(STAMP)
	$(BIN)/ruff check qlib tests benchmarks _ext book history
	$(BIN)/ruff format --check qlib tests benchmarks _ext book history

unit: $(STAMP)
	QLIB_EXPECT_TORCH=$(TORCH) $(BIN)/python -m pytest tests -q --durations=5 --ignore=tests/browser \
		--ignore=tests/pages

## qlib against torch $(OLD_TORCH) (the checks of the repository's files, which need no torch, run once above)
unit-old: $(STAMP_OLD)
	QLIB_EXPECT_TORCH=$(OLD_TORCH) HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci-old} $(VENV_OLD)/bin/python -m pytest tests -q --durations=5 --ignore=tests/browser \
		--ignore=tests/pages --ignore=tests/test_pairing.py --ignore=tests/test_binder_colab.py \
		--ignore=tests/test_citations.py

notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with book/nbval-sanitize.cfg \
		-q --durations=0 $(NOTEBOOKS)

## the stored outputs hold on the other kind of x86 CPU too: on an AVX-512 machine, FBGEMM, oneDNN, MKL and
## ATen are told to run their AVX2 kernels (on an AVX2-only machine, make notebooks already did)
AVX2_KERNELS := FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
notebooks-avx2: $(STAMP)
	@if [ "$$($(BIN)/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')" = AVX512 ]; then \
		echo "notebooks-avx2: every chapter under nbval with the AVX2 kernels"; \
		$(AVX2_KERNELS) $(BIN)/python -m pytest --nbval --nbval-current-env \
			--nbval-sanitize-with book/nbval-sanitize.cfg -q $(NOTEBOOKS); \
	else \
		echo "notebooks-avx2: this CPU has no AVX-512; make notebooks ran the AVX2 kernels already"; \
	fi

## every chapter executed on torch $(OLD_TORCH): every cell must run and every assert hold; the stored
## outputs are torch $(TORCH)'s, so they are not compared (nbval's lax mode)
notebooks-old: $(STAMP_OLD)
	PATH="$(CURDIR)/$(VENV_OLD)/bin:$$PATH" $(VENV_OLD)/bin/python -m pytest --nbval-lax --nbval-current-env \
		-q --durations=0 $(NOTEBOOKS)

book-strict: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . -W -n --keep-going

## make pages: the code each built chapter page shows runs as printed, in a fresh IPython
pages: book-strict
	$(BIN)/python -m pytest tests/pages -q --durations=5

## make browser: open every page of the built book in Chromium (screenshots: artifacts/screenshots/).
## Without Chromium it is skipped, and says so; with REQUIRE_BROWSER=1 (as .ci/run sets) it fails.
CHROMIUM ?= /usr/bin/chromium
browser: book-strict
	@if [ -x "$(CHROMIUM)" ]; then \
		echo "browser test: every page of _build/html in $(CHROMIUM)"; \
		CHROMIUM="$(CHROMIUM)" $(BIN)/python -m pytest tests/browser -q --durations=5; \
	elif [ "$${REQUIRE_BROWSER:-0}" = 1 ]; then \
		echo "browser test: FAILED: REQUIRE_BROWSER=1 but there is no Chromium at $(CHROMIUM)" >&2; \
		exit 1; \
	else \
		echo "browser test: SKIPPED: no Chromium at $(CHROMIUM) (apt-get install -y chromium)"; \
	fi

## make chapter NB=book/02_affine_map.md: rewrite the paired .ipynb with fresh outputs
chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make chapter NB=book/NN_topic.md"; exit 2; }
	$(BIN)/jupytext --to ipynb --execute $(NB)

## make fmt: format qlib, the tests and the code cells of every chapter's .md (then: make chapters)
fmt: $(STAMP)
	$(BIN)/ruff format qlib tests benchmarks _ext
	for md in $(CHAPTERS); do $(BIN)/jupytext --pipe "ruff format -" --to md:myst --output $$md $$md; done

## make chapters: regenerate every chapter
chapters: $(STAMP)
	for nb in $(CHAPTERS); do $(BIN)/jupytext --to ipynb --execute $$nb; done

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/bench_quantize.py
	$(BIN)/python benchmarks/bench_histogram.py
	$(BIN)/python benchmarks/bench_linear.py
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf _build

## make history: install each torch release in a throwaway venv and measure how it quantizes (slow; not part of make test)
history:
	bash history/sweep.sh
