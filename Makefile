# Two commands do all the set-up: `make demo` and `make test` each create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# torch/torchvision are installed first, pinned, so that transformers/accelerate do not pull a
# different torch; on these machines pip takes them from local files.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

.PHONY: install demo test test-all gpu-test clean
install: $(STAMP)

# The bundled model when it is there, a tiny random one otherwise (answers are then noise).
DEMO_MODEL := $(if $(wildcard assets/models/synth-tiny/config.json),synth-tiny,tiny-random/qwen2_5_vl)

demo: $(STAMP)
	$(BIN)/vidqa ask assets/demo.mp4 "What colour was the diamond that appeared in the video?" \
		--options red green purple orange --model $(DEMO_MODEL)

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/pytest -q -m "not gpu"

clean:
	rm -rf $(VENV) build *.egg-info
