# tunekit — two commands on a fresh machine:
#   make demo   set up .venv, then run the whole product end to end on the demo corpus (offline, tiny models)
#   make test   set up .venv, then run the test suite (unit + integration)
#
# Set-up keeps an existing torch: on a GPU machine run `make demo SYSTEM_SITE=1` inside an environment
# whose python already has your CUDA torch, and the venv reuses it instead of installing the CPU build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
SYSTEM_SITE ?= 0
DEMO_DIR ?= data/demo
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

ifeq ($(SYSTEM_SITE),1)
VENV_FLAGS := --system-site-packages
endif

.PHONY: demo test venv clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Keep a torch that is already importable (e.g. a CUDA build); otherwise install the pinned CPU build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: venv
	$(VENV)/bin/tunekit corpus synth out=$(DEMO_DIR)

test: venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_OUT)
