# Two commands for a newcomer: `make book` builds the rendered book,
# `make test` runs every check. Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The notebook kernel is started as `python`: make it the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)

.PHONY: venv book test lint unit notebooks book-strict browser chapter chapters fmt bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## make book: the rendered book in _build/html/index.html
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

## make test: lint, qlib's tests, every chapter under nbval, the book build, the book in a browser
test: lint unit notebooks book-strict browser
	@echo "make test: all checks passed"

lint: $(STAMP)
	$(BIN)/ruff check qlib tests benchmarks _ext book
	$(BIN)/ruff format --check qlib tests benchmarks _ext book

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q --durations=5 --ignore=tests/browser

notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with book/nbval-sanitize.cfg \
		-q --durations=0 $(NOTEBOOKS)

book-strict: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . -W -n --keep-going

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

clean:
	rm -rf _build
