# Two commands for a new user: `make demo` and `make test`. Both create (or reuse) .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=
# options added to the demo's two commands (tests/integration/test_make_demo.py runs it on tiny settings)
DEMO_ARGS ?=
DEMO_TRAIN_ARGS ?=

# pyproject.toml's requires-python: the pinned numpy, pandas, pyarrow, scikit-learn and matplotlib need 3.11
CHECK_PYTHON := import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"recsys_emb needs Python >= 3.11, $(VENV) has {v.major}.{v.minor}: rm -rf $(VENV) and run make PYTHON=python3.11 ...")

.PHONY: venv demo test typecheck bench clean

venv: $(STAMP)

# Order matters: the CPU torch and fbgemm-gpu-cpu first (with what torchrec imports), then torchrec
# without its declared dependency on the CUDA-only fbgemm-gpu, then everything else pinned, then this
# package (editable).
$(STAMP): requirements.txt requirements-torch.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c '$(CHECK_PYTHON)'
	$(PIP) install -q -r requirements-torch.txt
	$(PIP) install -q --no-deps torchrec==1.8.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import recsys_emb; from recsys_emb.torch_stack import check_torch_stack; check_torch_stack(); print('recsys_emb', recsys_emb.__version__, '| torch, FBGEMM and TorchRec load')"
	touch $(STAMP)

# The test runner and the pinned type checker.
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $(TEST_STAMP)

# The demo's run directory is its own: each run replaces the one before (--overwrite), so `make demo` runs any
# number of times, also after an interrupted run.
demo: $(STAMP)
	$(VENV)/bin/recsys-emb demo $(DEMO_ARGS)
	$(VENV)/bin/recsys-emb train --config configs/demo.yaml --overwrite $(DEMO_TRAIN_ARGS)

# mypy (configured in pyproject.toml) checks the whole package before the tests run.
typecheck: $(TEST_STAMP)
	$(PY) -m mypy

# The suite in parallel: one pytest process per core, at most 4 (many tests start real processes themselves).
test: typecheck
	$(PY) -m pytest -q -n auto --maxprocesses=4 $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/recsys-emb bench embeddings

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build dist *.egg-info
