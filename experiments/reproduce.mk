# Regenerate every table of docs/results.md from scratch at the current commit (issue 12, item 8).
#
#     make -f experiments/reproduce.mk -j2 OUT=runs/repro
#
# Each part trains its runs into $(OUT)/<part>/ (resumable: a part started again skips finished runs) and writes
# its tables to $(OUT)/tables/<part>.md, the text docs/results.md pastes; $(OUT)/timings.md lists the wall
# time of every part. `-j2` runs two parts at a time on a 2-core CPU, one torch thread each. No part needs a GPU
# or the network (Fashion-MNIST comes from Debian's `dataset-fashion-mnist`). Single parts: e.g.
# `make -f experiments/reproduce.mk OUT=runs/repro heldout2`. Part names and what they feed:
#
#   dev_full, dev_case    development grid tables ("Commands (development grid)" onwards)
#   estimator_bias        "Is the digits-CNN transient the online estimator's bias?"
#   run_length_digits     "Run length: the same CNN at 10x the steps"
#   run_length_mnist1d    its MNIST-1D CNN table
#   heldout, heldout2     the pre-registered held-out grids H and H' (stop criteria, flags, cleanlab, diagnostics)
#   finetune_rule         "Fine-tuning rule (item 6)"
#   model_ranking         "Model ranking (item 7)"

OUT ?= runs/repro
PYTHON ?= python
GWA := $(PYTHON) -m gwa.cli
TIME := $(PYTHON) experiments/timed.py $(OUT)/timings
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))
export OMP_NUM_THREADS := 1

PARTS := dev_full dev_case estimator_bias run_length_digits run_length_mnist1d heldout heldout2 \
	finetune_rule model_ranking
TABLES := $(PARTS:%=$(OUT)/tables/%.md)

.PHONY: all $(PARTS)
all: $(OUT)/timings.md

$(PARTS): %: $(OUT)/tables/%.md

$(OUT)/timings.md: $(TABLES)
	$(PYTHON) experiments/timed.py $(OUT)/timings --summary > $@
	@cat $@

$(OUT)/tables:
	mkdir -p $@

$(OUT)/tables/dev_full.md: | $(OUT)/tables
	$(TIME) dev_full -- $(GWA) bench --grid full --out $(OUT)/dev_full --workers 1 --report $@

$(OUT)/tables/dev_case.md: | $(OUT)/tables
	$(TIME) dev_case -- $(GWA) bench --grid case --out $(OUT)/dev_case --workers 1 --report $@

$(OUT)/tables/estimator_bias.md: | $(OUT)/tables
	$(TIME) estimator_bias -- $(PYTHON) experiments/estimator_bias.py --out $(OUT)/estimator_bias.json
	$(PYTHON) experiments/estimator_bias.py --out $(OUT)/estimator_bias.json --analyse-only \
		--plot $(OUT)/tables/estimator_bias.png > $@.tmp && mv $@.tmp $@

$(OUT)/tables/run_length_digits.md: | $(OUT)/tables
	$(TIME) run_length_digits -- $(PYTHON) experiments/run_length.py --out $(OUT)/run_length \
		--schedules constant,cosine --seeds 0,1,2 --plot $(OUT)/tables/run_length.png > $@.tmp && mv $@.tmp $@

$(OUT)/tables/run_length_mnist1d.md: | $(OUT)/tables
	$(TIME) run_length_mnist1d -- $(PYTHON) experiments/run_length.py --dataset mnist1d \
		--out $(OUT)/run_length_mnist1d --schedules constant --seeds 0,1,2 > $@.tmp && mv $@.tmp $@

$(OUT)/tables/heldout.md: | $(OUT)/tables
	$(TIME) heldout -- $(PYTHON) experiments/heldout_run.py $(OUT)/heldout --grid heldout
	$(PYTHON) experiments/heldout_analysis.py $(OUT)/heldout > $@.tmp && mv $@.tmp $@

$(OUT)/tables/heldout2.md: | $(OUT)/tables
	$(TIME) heldout2 -- $(PYTHON) experiments/heldout_run.py $(OUT)/heldout2 --grid heldout2
	$(PYTHON) experiments/heldout_analysis.py $(OUT)/heldout2 > $@.tmp && mv $@.tmp $@

$(OUT)/tables/finetune_rule.md: | $(OUT)/tables
	$(TIME) finetune_rule -- $(PYTHON) experiments/finetune_rule.py --plan all --out $(OUT)/finetune_rule \
		--json $(OUT)/finetune_rule.json --plot $(OUT)/tables/finetune_rule.png > $@.tmp && mv $@.tmp $@

$(OUT)/tables/model_ranking.md: | $(OUT)/tables
	$(TIME) model_ranking -- $(PYTHON) experiments/model_ranking.py --plan all --out $(OUT)/model_ranking \
		--json $(OUT)/model_ranking.json --plot $(OUT)/tables/model_ranking.png > $@.tmp && mv $@.tmp $@
