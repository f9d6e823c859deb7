# The README's two commands are `make demo` (set-up + quickstart training on the real corpus + evaluation +
# replies to probe questions) and `make test` (set-up + the test suite). Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/hf-neuralconv
QUICKSTART_DIR := outputs/seq2seq-quickstart
FULL_DIR := outputs/seq2seq-full

LOCK := requirements/lock.txt
# The lowest versions pyproject.toml allows of the libraries whose APIs the package follows (make test-oldest;
# transformers 5.20 is the first with Pipeline._prepare_generate_kwargs; tokenizers is what it resolves to).
# The libraries whose versions test-latest and test-oldest print before their run.
SHOWN := transformers|tokenizers|datasets|accelerate|peft|gradio
OLDEST := transformers==5.20.0 datasets==5.0.0 accelerate==1.10.0 peft==0.22.0

.PHONY: install kenlm browser demo full mmi test test-heavy test-latest test-oldest lock bench

# torch first, pinned to the CPU wheel: an unpinned or ranged torch would pull a multi-GB CUDA build. Everything
# else from the lock of tested versions, so a fresh machine gets exactly what CI tested.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev,space]"
	touch $@

install: $(VENV)/.installed

# KenLM's lmplz (n-gram estimation) built from the kenlm sdist; cached under ~/.cache/hf-neuralconv/kenlm.
kenlm:
	bash scripts/build_kenlm.sh

# Debian's chromium for the browser test of the Space (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# An existing model is kept (nothing is overwritten unless asked): `make demo RETRAIN=1` trains it again.
demo: install
	@if [ -f $(QUICKSTART_DIR)/results.json ] && [ -z "$(RETRAIN)" ]; then \
		echo "$(QUICKSTART_DIR) exists: skipping training (make demo RETRAIN=1 to retrain over it)"; \
	else \
		$(PY) -c "import yaml,sys; c=yaml.safe_load(open('recipes/seq2seq/quickstart.yaml')); c['overwrite_output_dir']=bool('$(RETRAIN)'); yaml.safe_dump(c, open('$(VENV)/quickstart.yaml','w'))" && \
		$(CLI) train $(VENV)/quickstart.yaml; \
	fi
	$(CLI) evaluate $(QUICKSTART_DIR)
	$(CLI) chat $(QUICKSTART_DIR) --prompts recipes/seq2seq/probes.txt --seed 0

# The full recipe (about an hour on 2 CPU cores) and its comparison with KenLM 3- and 5-gram LMs.
full: install kenlm
	$(CLI) train recipes/seq2seq/full.yaml
	$(CLI) evaluate $(FULL_DIR) --ngram-orders 3 5 --output $(FULL_DIR)/evaluation.json --overwrite
	$(CLI) chat $(FULL_DIR) --prompts recipes/seq2seq/probes.txt

# MMI decoding on top of the full model (Luan et al. 2017; He & Glass 2020): the anti-LM and the reverse model
# (sharing the chatbot's vocabulary), lambda/gamma tuned for dev BLEU, then the diversity report on test inputs.
MMI_DIR := outputs/seq2seq-full-mmi
mmi: install
	$(CLI) train recipes/mmi/anti_lm.yaml
	$(CLI) train recipes/mmi/reverse.yaml
	$(CLI) mmi-tune $(FULL_DIR) --reverse-model outputs/mmi-reverse --output-dir $(MMI_DIR) --overwrite
	$(CLI) diversity-report $(MMI_DIR) --anti-lm outputs/mmi-anti-lm --output $(MMI_DIR)/diversity_report.json --overwrite

test: install kenlm browser
	$(PY) -m pytest -q

# The suite on the newest versions pyproject.toml's ranges allow (no lock), in a venv of its own: transformers
# changes its APIs between minor versions, so a green `make test` on the lock is not enough.
test-latest: kenlm browser
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q torch==2.13.0
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev,space]"
	.venv-latest/bin/python -m pip list 2>/dev/null | grep -iE "^($(SHOWN)) "
	.venv-latest/bin/python -m pytest -q

# The suite on the lowest versions pyproject.toml allows of transformers and its companions.
test-oldest: kenlm browser
	rm -rf .venv-oldest
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install -q torch==2.13.0
	.venv-oldest/bin/python -m pip install -q -e ".[dev,space]" $(OLDEST)
	.venv-oldest/bin/python -m pip list 2>/dev/null | grep -iE "^($(SHOWN)) "
	.venv-oldest/bin/python -m pytest -q

# Rewrite the lock from the current venv (after `make test` passed in it with the versions to lock).
lock: install
	{ sed -n '1,3p' $(LOCK); $(PY) -m pip freeze --exclude-editable | grep -v '^torch=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

test-heavy: install kenlm browser
	$(PY) -m pytest -q -m heavy

bench: install
	$(PY) benchmarks/run_all.py
