# atemu — two commands for a fresh Debian machine with Python 3.11:
#   make run    install and start the emulator on its default profile (eseye-anynet) on a pty
#   make test   install what the tests need (mosquitto, chromium via apt-get) and run them
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= eseye-anynet
ARGS   ?=
SUDO   := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo)
APT_UPDATED := /tmp/.atemu-apt-updated

.PHONY: run install test test-deps bench bench-quick soak fuzz clean

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "make: python3-venv is missing; installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@$(PY) -m pip install -q --upgrade pip

# editable install: code changes need no reinstall; pyproject.toml changes (dependencies, entry points) do
$(VENV)/.atemu-installed: pyproject.toml | $(PY)
	@echo "make: installing atemu into $(VENV) (once)"
	@$(PY) -m pip install -q -e .
	@touch $@

install: $(VENV)/.atemu-installed

run: install
	$(VENV)/bin/atemu run $(PROFILE) $(ARGS)

define apt_need
	@if ! command -v $(1) >/dev/null 2>&1; then \
	  echo "make: $(1) is missing; installing Debian package $(2) with apt-get"; \
	  [ -f $(APT_UPDATED) ] || { $(SUDO) apt-get update -qq && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(2) >/dev/null; \
	fi
endef

test-deps: $(PY)
	$(call apt_need,/usr/sbin/mosquitto,mosquitto)
	$(call apt_need,openssl,openssl)
	$(call apt_need,/usr/bin/chromium,chromium)
	@$(PY) -m pip install -q -e '.[test]'

test: test-deps
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	@$(PY) -m pip install -q -e '.[test]'
	$(PY) tests/bench/run.py --out bench-results

bench-quick: install
	$(PY) tests/bench/run.py --quick --out bench-results

# in-process fuzz: every profile, FUZZ_INPUTS inputs each (default 1e6), real local peers, seeded
FUZZ_INPUTS ?= 1000000
FUZZ_SEED   ?= 1
fuzz: install
	@$(PY) -m pip install -q -e '.[test]'
	$(PY) tests/fuzzer.py --inputs $(FUZZ_INPUTS) --seed $(FUZZ_SEED) --json fuzz-results.json

clean:
	rm -rf $(VENV) build *.egg-info bench-results fuzz-results.json .pytest_cache
