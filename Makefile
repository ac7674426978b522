# meshwg: `make demo` and `make test` install everything they need (Debian packages with
# apt, Python packages into .venv) and are safe to run again.

VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
APT_PACKAGES := wireguard-go wireguard-tools iperf3 iputils-ping iproute2 iptables \
                conntrack bind9-dnsutils avahi-utils avahi-daemon dbus dnsperf \
                netcat-openbsd procps kmod miniupnpd-iptables miniupnpd bind9 knot \
                gcc libssl-dev libsodium-dev libgcrypt20-dev python3-dev
PYTEST_ARGS ?=

.PHONY: all deps apt venv resolved-lab test test-fast demo bench bench-json fuzz clean

all: test

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml setup.py $(wildcard meshwg/accel/*.c meshwg/accel/*.h)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# systemd-resolved for the live test of `join --dns resolved` (discovery/lab/resolved.py):
# unpacked, not installed (its postinst would point this host's /etc/resolv.conf at a stub
# nothing serves here); the test skips with the reason when this fails.
RESOLVED_ROOT ?= /var/cache/meshwg/systemd-resolved
resolved-lab:
	@[ -x $(RESOLVED_ROOT)/lib/systemd/systemd-resolved ] || { \
	  d=$$(mktemp -d) && cd $$d && \
	  { apt-get download -qq systemd-resolved 2>/dev/null || \
	    { apt-get update -qq && apt-get download -qq systemd-resolved 2>/dev/null; }; } && \
	  mkdir -p $(RESOLVED_ROOT) && dpkg-deb -x systemd-resolved_*.deb $(RESOLVED_ROOT); \
	  cd / && rm -rf $$d; \
	  [ -x $(RESOLVED_ROOT)/lib/systemd/systemd-resolved ] || \
	    echo "systemd-resolved not unpacked: its live test will skip"; }

deps: apt venv resolved-lab

test: deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/pytest -m "not netns" $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/meshwg lab

bench: deps
	$(PY) bench/bench.py

bench-json: deps
	$(PY) bench/bench.py --json

# every fuzz target in turn, FUZZ_SECONDS each (atheris when it installs, else the built-in
# loop); one target: $(PY) -m fuzz TARGET --seconds N. See fuzz/README.md.
FUZZ_SECONDS ?= 60
fuzz: venv
	-$(VENV)/bin/pip install -q -e '.[fuzz]'
	$(PY) -m fuzz all --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
