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
DEMO_OUT ?= out/demo$(DEMO_SUFFIX)
DEMO_RUN ?= runs/demo$(DEMO_SUFFIX)
DEMO_TRACKS ?= 12
DEMO_FAMILY ?= musicgen
TUNEKIT := $(VENV)/bin/tunekit
PYTEST_ARGS ?=

# `make demo DEMO_FAMILY=acestep`: the same path with ACE-Step 1.5 (latent prep, flow-matching LoRA, 48 kHz songs).
ifeq ($(DEMO_FAMILY),acestep)
DEMO_PREP_ARGS := pipeline=acestep
DEMO_RECIPE := demo-acestep
DEMO_SUFFIX := -acestep
DEMO_PROMPT := lyrics="[verse] slow lights over the water"
else ifeq ($(DEMO_FAMILY),musicgen)
DEMO_PREP_ARGS :=
DEMO_RECIPE := demo
DEMO_SUFFIX :=
DEMO_PROMPT :=
else
$(error DEMO_FAMILY=$(DEMO_FAMILY) is not a model family; use musicgen or acestep)
endif

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
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,ray]"
	touch $@

# The whole product offline on tiny random models (their audio is noise; the path is real):
# corpus -> prep (licences, Demucs, -14 LUFS, windows, tags, captions, EnCodec tokens or ACE-Step latents)
# -> train -> generate -> eval.
demo: venv
	HF_HUB_OFFLINE=1 $(TUNEKIT) corpus synth out=$(DEMO_DIR) n_tracks=$(DEMO_TRACKS)
	HF_HUB_OFFLINE=1 $(TUNEKIT) prep $(DEMO_PREP_ARGS) corpus=$(DEMO_DIR) out=$(DEMO_OUT) models=tiny
	@echo "Tags and captions of a few windows (with models=tiny the CLAP tags are random and left out of"
	@echo "the captions: these captions come from the Essentia DSP tags and the corpus metadata):"
	$(PY) -m tunekit.prep.show $(DEMO_OUT) 3
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(TUNEKIT) train recipe=$(DEMO_RECIPE) data=$(DEMO_OUT) out=$(DEMO_RUN)
	HF_HUB_OFFLINE=1 $(TUNEKIT) generate run=$(DEMO_RUN) prompt="a mellow lo-fi hip-hop beat with warm piano" \
		$(DEMO_PROMPT) duration=4 out=$(DEMO_RUN)/demo.wav
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(TUNEKIT) eval run=$(DEMO_RUN) models=tiny
	@echo "Evaluation report: $(DEMO_RUN)/eval/report.html"

test: venv
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_OUT) $(DEMO_RUN)
