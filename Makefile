# atemu — two commands for a fresh Debian machine with Python 3.11:
#   make run    install and start the emulator on its default profile (eseye-anynet) on a pty
#   make test   install what the tests need (mosquitto, chromium via apt-get) and run them
# and for the project's own checks:
#   make bench  benchmarks (make bench-quick: a small run)
#   make soak   one module under mixed load for SOAK_SECONDS (default 600), RSS sampled
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= eseye-anynet
ARGS   ?=
SOAK_SECONDS ?= 600
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

# exec: the shell gives way to atemu, which handles Ctrl+C itself (closes everything, exits 0). make,
# interrupted too, then stops without a message of its own.
run: install
	exec $(VENV)/bin/atemu run $(PROFILE) $(ARGS)

APT_LOG := /tmp/atemu-apt.log
define apt_need
	@if ! command -v $(1) >/dev/null 2>&1; then \
	  echo "make: $(1) is missing; installing Debian package $(2) with apt-get ($(3); output in $(APT_LOG))"; \
	  [ -f $(APT_UPDATED) ] || { $(SUDO) apt-get update -qq >>$(APT_LOG) 2>&1 && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(2) >>$(APT_LOG) 2>&1 \
	    || { echo "make: apt-get install $(2) failed; see $(APT_LOG)"; exit 1; }; \
	  echo "make: $(2) installed"; \
	fi
endef

# the test extras: pytest, hypothesis, pytest-timeout (pyproject.toml [test])
$(VENV)/.atemu-test-installed: pyproject.toml | $(PY)
	@echo "make: installing atemu with its test extras (pytest, hypothesis, pytest-timeout) into $(VENV)"
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@ $(VENV)/.atemu-installed

test-deps: $(VENV)/.atemu-test-installed
	$(call apt_need,/usr/sbin/mosquitto,mosquitto,the MQTT broker of the tests; a few seconds)
	$(call apt_need,openssl,openssl,certificates of the TLS tests; a few seconds)
	$(call apt_need,/usr/bin/chromium,chromium,for the control web page tests; about a minute)

test: test-deps
	@echo "make: running the test suite (pytest; a few minutes)"
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.atemu-test-installed
	$(PY) tests/bench/run.py --out bench-results

bench-quick: $(VENV)/.atemu-test-installed
	$(PY) tests/bench/run.py --quick --out bench-results

# one module under mixed load (commands, TCP, MQTT, files, URC storms, faults) for SOAK_SECONDS, RSS sampled;
# fails on a stuck step or RSS growth after warm-up (tests/bench/soak.py --help)
soak: $(VENV)/.atemu-test-installed
	$(call apt_need,/usr/sbin/mosquitto,mosquitto,the MQTT broker of the soak; a few seconds)
	$(PY) tests/bench/soak.py --seconds $(SOAK_SECONDS) --out bench-results

clean:
	rm -rf $(VENV) build *.egg-info bench-results .pytest_cache
