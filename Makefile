# `make book` builds the rendered book, `make test` runs every check, `make quick` the fast loop
# while editing; `make help` lists every target. Each creates what it needs in .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where torch comes from: empty, pip's own indexes (on Linux PyPI's torch is the CUDA build, about
# 5.5 GB with its nvidia packages, and runs on the CPU); TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# takes the CPU build instead (about 0.9 GB), where that index is reachable.
TORCH_INDEX_URL ?=
PIP_INSTALL = python -m pip install --quiet $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
# The book's numbers are torch 2.14.1's (requirements-build.txt). qlib is also exact with torch 2.13.0:
# its tests and every chapter's code run against that release too, in a second environment.
OLD_TORCH := 2.13.0
OLD_TORCHVISION := 0.28.0
VENV_OLD := .venv-$(OLD_TORCH)
TORCH := $(shell sed -n 's/^torch==//p' requirements-build.txt)
# The notebook kernel is started as `python`: make it the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
# Chapters whose code runs torch's CPU-dependent kernels (quantized Linear and Conv, training, Inductor)
# say so in their header (`avx2_pass: true`): make notebooks runs them on this CPU and make
# notebooks-avx2 again under the AVX2 kernels. Every other chapter runs under the AVX2 kernels only,
# so its stored outputs are proven the same on both kinds of CPU by the same run.
CPU_CHAPTERS := $(shell grep -l '^avx2_pass: true' $(CHAPTERS))
OTHER_CHAPTERS := $(filter-out $(CPU_CHAPTERS),$(CHAPTERS))
AVX2_KERNELS := FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
# nbval runs each notebook's kernel with this IPython profile: a cell that glues numbers into the text
# (hidden on the page) keeps no name it binds, so the shown code is proven to run without it.
NBVAL = IPYTHONDIR=$(CURDIR)/tools/ipython python -m pytest --nbval-current-env
NBVAL_STRICT = $(NBVAL) --nbval --nbval-sanitize-with book/nbval-sanitize.cfg -q --durations=3

STAMP_BUILD := $(VENV)/.installed-build
STAMP := $(VENV)/.installed
STAMP_OLD := $(VENV_OLD)/.installed

.PHONY: help venv venv-old book test quick lint unit unit-old unit-avx2 notebooks notebooks-avx2 notebooks-old \
	book-strict pages browser package chapter chapters fmt bench clean history

## make help: this list
help:
	@sed -n 's/^## make /  make /p' $(MAKEFILE_LIST)

$(STAMP_BUILD): requirements-build.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/$(PIP_INSTALL) -r requirements-build.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP_BUILD)

$(STAMP): $(STAMP_BUILD) requirements.txt
	$(BIN)/$(PIP_INSTALL) -r requirements.txt
	touch $(STAMP)

# the same pins, with torch at $(OLD_TORCH) and its torchvision; PyPI's torchvision is built for the CUDA
# torch, and imports beside the CPU one with tools/torchvision_cpu_shim.py (see there)
$(STAMP_OLD): requirements-build.txt requirements.txt pyproject.toml tools/torchvision_cpu_shim.py
	$(PYTHON) -m venv $(VENV_OLD)
	$(VENV_OLD)/bin/python -m pip install --quiet --upgrade pip
	cat requirements-build.txt requirements.txt | grep -v '^-r ' \
		| sed 's/^torch==.*/torch==$(OLD_TORCH)/; s/^torchvision==.*/torchvision==$(OLD_TORCHVISION)/' \
		> $(VENV_OLD)/requirements.txt
	$(VENV_OLD)/bin/$(PIP_INSTALL) -r $(VENV_OLD)/requirements.txt
	$(VENV_OLD)/bin/python -m pip install --quiet --no-deps -e .
	site=$$($(VENV_OLD)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
		cp tools/torchvision_cpu_shim.py $$site/_torchvision_cpu_shim.py; \
		echo "import _torchvision_cpu_shim" > $$site/_torchvision_cpu_shim.pth
	touch $(STAMP_OLD)

venv: $(STAMP)
venv-old: $(STAMP_OLD)

## make book: the rendered book in _build/html/index.html (installs only what building needs)
book: $(STAMP_BUILD)
	$(BIN)/jupyter-book build . -W -n --keep-going

## make test: every check below, two stages at a time, the longest first, and a table of each stage's seconds
test:
	@$(PYTHON) tools/stages.py venv venv-old unit:venv notebooks-old:venv-old notebooks:venv book-strict:venv \
		browser:book-strict notebooks-avx2:venv unit-avx2:venv unit-old:venv-old lint:venv package:venv \
		pages:book-strict

## make quick: lint, qlib's tests on torch $(TORCH) (hypothesis's dev profile), and the chapters changed
## against main under nbval (or NB="book/09_linear.md ..."): the loop while editing, about a minute
quick: $(STAMP)
	$(BIN)/ruff check qlib tests benchmarks _ext book history tools
	$(BIN)/ruff format --check qlib tests benchmarks _ext book history tools
	$(TEST_THREADS) HYPOTHESIS_PROFILE=dev $(BIN)/python -m pytest tests -q -x -n 2 --dist loadfile \
		--ignore=tests/browser --ignore=tests/pages --ignore=tests/test_package.py
	@changed="$${NB:-$$(git diff --name-only main -- 'book/[0-9][0-9]_*.md' 'book/[0-9][0-9]_*.ipynb'; \
		git status --porcelain -- 'book/[0-9][0-9]_*' | cut -c4-)}"; \
	notebooks=$$(for f in $$changed; do echo "$${f%.*}.ipynb"; done | sort -u); \
	if [ -n "$$notebooks" ]; then $(NBVAL_STRICT) $$notebooks; else echo "quick: no chapter changed"; fi

## make lint: ruff (check and format) over the code and the chapters' code; mypy over qlib
lint: $(STAMP)
	$(BIN)/ruff check qlib tests benchmarks _ext book history tools
	$(BIN)/ruff format --check qlib tests benchmarks _ext book history tools
	$(BIN)/mypy

# The test stages, and the chapters' second and third runs, run torch on one thread (OMP_NUM_THREADS) unless
# told otherwise: two stages share the two cores, and torch's threads spin while they wait for a busy core (the
# unit tests took 2.4 times the CPU time). Tests whose integers follow the thread count set it themselves;
# make notebooks runs the chapters on torch's default thread count, as a reader does.
TEST_THREADS = OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}

## make unit: qlib's tests on torch $(TORCH), 300 hypothesis examples each, on both cores
unit: $(STAMP)
	$(TEST_THREADS) QLIB_EXPECT_TORCH=$(TORCH) $(BIN)/python -m pytest tests -q -n 2 --dist loadfile --durations=5 --ignore=tests/browser \
		--ignore=tests/pages --ignore=tests/test_package.py  # make package runs it, on the dist/ it builds

## make unit-old: qlib against torch $(OLD_TORCH), 50 examples each (HYPOTHESIS_PROFILE=soak: 5,000);
## the checks of the repository's files and of the one-file copies (qlib against itself), and the emulated AVX2 run
## of XNNPACK's kernels (which do not depend on torch's release), run once, in make unit
unit-old: $(STAMP_OLD)
	$(TEST_THREADS) QLIB_EXPECT_TORCH=$(OLD_TORCH) HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci-old} $(VENV_OLD)/bin/python -m pytest \
		tests -q -n 2 --dist loadfile --durations=5 --ignore=tests/browser --ignore=tests/pages --ignore=tests/test_pairing.py \
		--ignore=tests/test_binder_colab.py --ignore=tests/test_citations.py --ignore=tests/test_layers.py \
		--ignore=tests/test_package.py --ignore=tests/test_standalone.py --ignore=tests/test_xnnpack_cpu_kind.py

## make unit-avx2: the tests marked cpu_kind again, with torch's kernels held to AVX2 (on an AVX-512 CPU;
## on an AVX2-only one make unit ran them there already)
unit-avx2: $(STAMP)
	@if [ "$$($(BIN)/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')" = AVX512 ]; then \
		$(TEST_THREADS) $(AVX2_KERNELS) HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-dev} $(BIN)/python -m pytest tests -q -m cpu_kind \
			--ignore=tests/browser --ignore=tests/pages; \
	else echo "unit-avx2: this CPU has no AVX-512; make unit ran the AVX2 kernels already"; fi

## make notebooks: every chapter under nbval, its stored outputs compared: the chapters marked
## avx2_pass on this CPU, the others under the AVX2 kernels
notebooks: $(STAMP)
	@test -n "$(CPU_CHAPTERS)" -a -n "$(OTHER_CHAPTERS)" || { echo "no chapter says avx2_pass: true" >&2; exit 1; }
	$(NBVAL_STRICT) $(CPU_CHAPTERS:.md=.ipynb)
	$(AVX2_KERNELS) $(NBVAL_STRICT) $(OTHER_CHAPTERS:.md=.ipynb)

## make notebooks-avx2: the chapters marked avx2_pass again, under the AVX2 kernels (on an AVX-512 CPU) and on one
## thread (make notebooks runs torch's default), so their stored outputs hold for either thread count too
notebooks-avx2: $(STAMP)
	@if [ "$$($(BIN)/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')" = AVX512 ]; then \
		test -n "$(CPU_CHAPTERS)" && $(TEST_THREADS) $(AVX2_KERNELS) $(NBVAL_STRICT) $(CPU_CHAPTERS:.md=.ipynb); \
	else echo "notebooks-avx2: this CPU has no AVX-512; make notebooks ran the AVX2 kernels already"; fi

## make notebooks-old: every chapter executed on torch $(OLD_TORCH): every cell must run and every assert
## hold; the stored outputs are torch $(TORCH)'s, so they are not compared (nbval's lax mode)
notebooks-old: $(STAMP_OLD)
	$(TEST_THREADS) PATH="$(CURDIR)/$(VENV_OLD)/bin:$$PATH" IPYTHONDIR=$(CURDIR)/tools/ipython $(VENV_OLD)/bin/python -m pytest \
		--nbval-lax --nbval-current-env -q --durations=3 $(NOTEBOOKS)

## make book-strict: the book built from scratch, every warning an error
book-strict: $(STAMP_BUILD)
	rm -rf _build/html
	$(BIN)/jupyter-book build . -W -n --keep-going

## make pages: each built chapter page (make book-strict first) shows exactly its notebook's shown cells,
## and hides only glue and the Colab cell (nbval runs them, with the glue cells' names dropped)
pages: $(STAMP)
	$(BIN)/python -m pytest tests/pages -q

## make browser: open every page of the built book (make book-strict first) in Chromium (screenshots:
## artifacts/screenshots/).
## Without Chromium it is skipped, and says so; with REQUIRE_BROWSER=1 (as .ci/run sets) it fails.
CHROMIUM ?= /usr/bin/chromium
browser: $(STAMP)
	@if [ -x "$(CHROMIUM)" ]; then \
		echo "browser test: every page of _build/html in $(CHROMIUM)"; \
		CHROMIUM="$(CHROMIUM)" $(BIN)/python -m pytest tests/browser -q --durations=5; \
	elif [ "$${REQUIRE_BROWSER:-0}" = 1 ]; then \
		echo "browser test: FAILED: REQUIRE_BROWSER=1 but there is no Chromium at $(CHROMIUM)" >&2; \
		exit 1; \
	else \
		echo "browser test: SKIPPED: no Chromium at $(CHROMIUM) (apt-get install -y chromium)"; \
	fi

## make package: the sdist and wheel a user installs (qlib and its data, nothing of the book), checked
## by twine and installed into a fresh environment
package: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --sdist --wheel --outdir dist . > /dev/null
	$(BIN)/twine check --strict dist/*
	$(BIN)/python -m pytest tests/test_package.py -q

## make chapter NB=book/02_affine_map.md: rewrite the paired .ipynb with fresh outputs
chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make chapter NB=book/NN_topic.md"; exit 2; }
	$(BIN)/jupytext --to ipynb --execute $(NB)

## make chapters: regenerate every chapter
chapters: $(STAMP)
	for nb in $(CHAPTERS); do $(BIN)/jupytext --to ipynb --execute $$nb; done

## make fmt: format qlib, the tests, the tools and the chapters' code cells (80 columns: book/ruff.toml)
fmt: $(STAMP)
	$(BIN)/ruff format qlib tests benchmarks _ext history tools
	$(BIN)/jupytext --sync $(CHAPTERS)
	$(BIN)/ruff format $(NOTEBOOKS)
	$(BIN)/jupytext --sync $(NOTEBOOKS)

## make bench: qlib against torch's kernels and torchao, ratios from one run each
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/bench_quantize.py
	$(BIN)/python benchmarks/bench_histogram.py
	$(BIN)/python benchmarks/bench_linear.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_llm_weights.py

## make clean: remove the built book and the test artifacts
clean:
	rm -rf _build artifacts dist

## make history: install each torch release in a throwaway venv and measure how it quantizes (slow; not in make test)
history:
	bash history/sweep.sh
