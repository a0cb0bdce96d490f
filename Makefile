# Two commands for a new user: `make demo` and `make test`. Both create (or reuse) .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test bench clean

venv: $(STAMP)

# Order matters: the CPU torch and fbgemm-gpu-cpu first, then torchrec without its declared
# dependency on the CUDA-only fbgemm-gpu, then everything else pinned, then this package.
$(STAMP): requirements.txt requirements-torch.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-torch.txt
	$(PIP) install -q --no-deps torchrec==1.8.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, fbgemm_gpu, torchrec; print('torch', torch.__version__, '| torchrec ok')"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recsys-emb demo
	$(VENV)/bin/recsys-emb train --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/recsys-emb bench embeddings

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
