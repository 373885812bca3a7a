# Two entry points: `make demo` (train on the bundled sample data) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# visdom's sdist needs pkg_resources to build: keep setuptools<81 in isolated builds.
# PIP_CONSTRAINT replaces a constraint set in pip's config, so keep the machine's one too.
export PIP_CONSTRAINT := $(strip $(CURDIR)/constraints/build.txt $(wildcard /etc/xdg/pip/constraints.txt))

.PHONY: install test test-fast demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# A short from-scratch SSD300 run on the bundled VOC sample, on the CPU (minutes on 2 cores).
# Running it again resumes from weights/demo and has nothing left to do.
demo: $(STAMP)
	$(PY) train.py --dataset_root data/samples/voc_mini --train_sets 2007:trainval \
		--basenet none --device cpu --batch_size 4 --num_workers 2 --max_iter 20 \
		--warmup_iters 5 --clip_grad 10 --log_every 2 --checkpoint_every 0 --seed 0 \
		--save_folder weights/demo --resume auto

bench: $(STAMP)
	$(PY) benchmarks/bench_forward.py
	$(PY) benchmarks/bench_loss_detect.py --baseline
	$(PY) benchmarks/bench_augmentation.py
	$(PY) benchmarks/bench_eval.py

clean:
	rm -rf build *.egg-info .pytest_cache
