# pytest-lxdsnap: every target installs what it needs (a fresh Debian 12 host, as root, is enough).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install setup setup-incus setup-debian setup-incus-debian test test-fast test-incus demo lint package docs \
	bench bench-strategies bench-paired bench-transport bench-load bench-systemd bench-xdist bench-ansible bench-cluster \
	soak clean-lxd cluster-up cluster-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q -e '.[test,ansible,testinfra]'
	touch $(STAMP)

install: $(STAMP)

# Install and start LXD, create a storage pool, import the offline lxdsnap/busybox image (idempotent).
setup: install
	$(BIN)/lxdsnap setup

# Install and start Incus (Debian 12: from bookworm-backports), beside LXD, with the same pool and image.
setup-incus: install
	$(BIN)/lxdsnap setup --incus

# The fast tier: lint, types, and tests/unit (pure logic, in-process pytest runs). Needs no daemon and no setup;
# a few seconds. Checked with every daemon out of reach (as root):
#   unshare --mount --net sh -c 'mount -t tmpfs none /var/lib/lxd && mount -t tmpfs none /var/lib/incus && make test-fast'
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest tests/unit -p no:cacheprovider $(PYTEST_ARGS)

# The systemd tier's needs: the Debian 12 systemd image lxdsnap/debian-12 (debootstrap from the host's Debian
# mirror, about 90 s, once per machine: kept as the image and as a tarball for the other daemon) and the host's
# package cache (apt-cacher-ng on 127.0.0.1:3142). Idempotent: a second run changes nothing.
setup-debian: setup
	$(BIN)/lxdsnap setup --image debian --package-cache

setup-incus-debian: setup-incus
	$(BIN)/lxdsnap setup --incus --image debian --package-cache

# The full test suite (tests/unit and the systemd tier included), against the real LXD daemon.
test: setup setup-debian
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

# The same suite against the real Incus daemon (LXDSNAP_BACKEND=incus: its socket, `incus` for `lxc`).
test-incus: setup-incus setup-incus-debian
	LXDSNAP_BACKEND=incus $(BIN)/pytest $(PYTEST_ARGS)

# The examples, against the real LXD daemon, with the plugin's summary.
demo: setup setup-debian
	cd examples/seed_tutorial && ../../$(BIN)/python make_container.py create
	cd examples/seed_tutorial && ../../$(BIN)/pytest -v; status=$$?; ../../$(BIN)/python make_container.py delete; exit $$status
	cd examples/declared && ../../$(BIN)/pytest -v
	cd examples/strategies && ../../$(BIN)/pytest -v
	cd examples/ecosystem && ../../$(BIN)/pytest -v --lxd-durations=3
	cd examples/ecosystem && ../../$(BIN)/pytest -v -n 2
	cd examples/ansible_role && ../../$(BIN)/pytest -v

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The sdist and wheel build, and their metadata (the README as long description) passes twine's check.
package: install
	rm -rf dist
	$(BIN)/python -m build -q -o dist .
	$(BIN)/twine check --strict dist/*

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

# The docs (docs/, no LXD needed): Sphinx with warnings as errors and every cross reference resolved (-n), from a
# clean build so every page is read again; then the offline link check (relative links, anchors, reviewed URLs).
docs: $(DOCS_STAMP)
	rm -rf docs/_build
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html
	$(BIN)/python docs/checklinks.py docs/_build/html

# The plugin on real systems: whole suites on busybox and Debian 12 + systemd side by side (tutorial recipe, new
# instance per test, plugin on existing and declared containers, testcontainers + Docker when a Docker daemon
# answers), in-place resets against LXD's floor, and the targets met or missed (one run; leaves nothing behind).
bench: setup setup-debian
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# Every strategy against the tutorial's recipe, per pool, with lxcfs's stop hook stock and fast.
bench-strategies: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/strategies.py --stop-hook both $(BENCH_ARGS)

# One suite under two installs of the plugin, alternating (OLD=/path/to/other/venv/bin/python): medians, ratio.
bench-paired: setup
	$(BIN)/python benchmarks/paired.py --old $(OLD) --new $(BIN)/python $(BENCH_ARGS)

# What the plugin adds to a suite that marks no test (non-editable install; target <= 50 ms). No daemon needed.
bench-load: install
	$(BIN)/python benchmarks/load.py $(BENCH_ARGS)

# pytest -n 2 against -n 0 (one base per run, shared by the workers): a reset-bound suite and one of 1 s tests,
# alternating runs, whole-process medians and ratios (leaves nothing behind).
bench-xdist: setup
	$(BIN)/python benchmarks/xdist.py $(BENCH_ARGS)

# HTTPS against the unix socket, for LXD and Incus (connect, exec, in-place reset, clone): medians, ratios.
bench-transport: setup setup-incus
	$(BIN)/python benchmarks/transport.py $(BENCH_ARGS)

# The systemd tier's costs on lxdsnap/debian-12: clone identity, systemd waits, apt through the package cache.
bench-systemd: setup-debian
	$(BIN)/python benchmarks/systemd_costs.py $(BENCH_ARGS)

# A real 2-member LXD cluster on loopback beside the host's daemon (127.0.0.2, 127.0.0.3; never touches it), and
# its removal (daemons, mounts, /var/lib/lxdsnap-cluster). The cluster tier of `make test` builds its own.
cluster-up: setup
	$(BIN)/lxdsnap cluster up 2

cluster-down: install
	$(BIN)/lxdsnap cluster down

# Per-member reset costs on a loopback cluster (busybox, and Debian when built), all members at once: one table.
bench-cluster: setup
	$(BIN)/python benchmarks/cluster.py $(BENCH_ARGS)
# A role suite of 5 tests (examples/ansible_role's role): converged once into the baseline against a new instance
# + converge per test (Molecule's way); medians and ratios (leaves nothing behind).
bench-ansible: setup-debian
	$(BIN)/python benchmarks/ansible_role.py $(BENCH_ARGS)

# 500 tests x 2 containers in one session: no leaked instances, snapshots, threads or fds, flat resets.
soak: setup
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)
