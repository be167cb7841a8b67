"""pytest glue: registers the options, starts the session, the ``lxd`` fixture, cleanup and the summary.

The pytest layer is this module with :mod:`~pytest_lxdsnap.markers` (the marker's grammar),
:mod:`~pytest_lxdsnap.interrupts` (signals), :mod:`~pytest_lxdsnap.report` and :mod:`~pytest_lxdsnap.hookcalls`.
The LXD work lives in :mod:`pytest_lxdsnap.session`; tests without the marker pay nothing and no connection
to LXD is opened for a suite that has no marked test.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_lxdsnap import report
from pytest_lxdsnap.declarations import ContainerSpec, ExistingSpec, load_all
from pytest_lxdsnap.errors import ConfigError, LxdSnapError, LxdUnreachable, ResetError
from pytest_lxdsnap.interrupts import InterruptGuard
from pytest_lxdsnap.lxd.connection import (
    Endpoint,
    check_tls_files,
    insecure_warning,
    pinned_fingerprint,
    trusted_on_first_use,
)
from pytest_lxdsnap.markers import MARKER, MARKER_HELP, clone_of_existing, marker_names, requests_for
from pytest_lxdsnap.options import OPTIONS as OPTIONS_TABLE
from pytest_lxdsnap.options import Options

if TYPE_CHECKING:  # only for annotations: a suite without marked tests never loads the session (or pylxd)
    from pytest_lxdsnap.handle import Containers
    from pytest_lxdsnap.model import Checkout, Request
    from pytest_lxdsnap.session.core import LxdSession

OPTIONS: pytest.StashKey[Options] = pytest.StashKey()
ENDPOINT: pytest.StashKey[Endpoint] = pytest.StashKey()
SPECS: pytest.StashKey[dict[str, ContainerSpec]] = pytest.StashKey()
EXISTING: pytest.StashKey[dict[str, ExistingSpec]] = pytest.StashKey()
SESSION: pytest.StashKey[LxdSession] = pytest.StashKey()
NEXT_ITEM: pytest.StashKey[pytest.Item | None] = pytest.StashKey()
REPORTS: pytest.StashKey[dict[str, pytest.TestReport]] = pytest.StashKey()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_lxdsnap import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lxdsnap", "LXD container snapshots (pytest-lxdsnap)")
    for option in OPTIONS_TABLE:
        if option.type == "bool":
            group.addoption(option.flag, dest=option.name, action="store_true", default=None,
                            help=option.help_with_default)
            group.addoption(option.off_flag, dest=option.name, action="store_false", default=None,
                            help=f"Turn {option.flag} off for this run, whatever the ini file says")
        else:
            group.addoption(option.flag, dest=option.name, default=None, metavar=option.metavar,
                            help=option.help_with_default)
        if option.ini:
            # strings, booleans too, so the table's parser checks them and its error names the key (pytest's
            # "invalid truth value" does not); under pytest 9's native [tool.pytest] table write them quoted
            parser.addini(option.name, option.help_with_default, default=None)


def read_options(config: pytest.Config) -> Options:
    """Each option from the command line, else the ini file, else its default; checked against the table."""
    raw: dict[str, object] = {}
    for option in OPTIONS_TABLE:
        value = config.getoption(option.name)
        raw[option.name] = config.getini(option.name) if value is None and option.ini else value
    try:
        return Options.parse(raw)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    options, endpoint = config.stash.get(OPTIONS, None), config.stash.get(ENDPOINT, None)
    if options is None or endpoint is None:
        return []
    line = f"lxdsnap: {endpoint.describe()}, {options.header()}"
    if not endpoint.insecure:
        return [line]
    if endpoint.fingerprint is None:  # trust on first use, once: the session pins what this shows
        try:
            endpoint = config.stash[ENDPOINT] = trusted_on_first_use(endpoint)
        except LxdSnapError:
            pass  # the session says why when it connects
    return [line, "lxdsnap: WARNING " + insecure_warning(endpoint, endpoint.fingerprint)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    options = read_options(config)
    pyproject = config.inipath if config.inipath and config.inipath.name == "pyproject.toml" else None
    endpoint = Endpoint(url=options.lxd_endpoint or None, project=options.lxd_project or None,
                        timeout=options.lxd_timeout, cert=options.lxd_cert or None, key=options.lxd_key or None,
                        server_cert=options.lxd_server_cert or None, insecure=options.lxd_insecure)
    try:
        config.stash[SPECS], config.stash[EXISTING] = load_all(pyproject or Path(config.rootpath) / "pyproject.toml")
        check_tls_files(endpoint)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[OPTIONS], config.stash[ENDPOINT] = options, endpoint
    config.pluginmanager.register(InterruptGuard(config, lambda: config.stash.get(SESSION, None)),
                                  "lxdsnap-interrupt-guard")
    if config.get_verbosity() >= 1:
        config.pluginmanager.register(report.VerboseResets(config), "lxdsnap-verbose-resets")


def _worker(config: pytest.Config) -> str | None:
    """The pytest-xdist worker id ("gw3") when this process is one."""
    workerid: str | None = getattr(config, "workerinput", {}).get("workerid")
    return workerid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    specs = config.stash[SPECS]
    uses: dict[str, int] = {}  # declared container -> the tests that use it
    for item in items:
        try:
            names = marker_names(item)
        except ValueError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        for name in names:
            if name in specs:
                uses[name] = uses.get(name, 0) + 1
        refusal = clone_of_existing(item, specs)
        if refusal:
            raise pytest.UsageError(refusal)
    if uses:
        check_generated_names(config.stash[OPTIONS], _worker(config), uses)


def check_generated_names(options: Options, worker: str | None, uses: dict[str, int]) -> None:
    """Refuse now a declared name whose clones or kept copies would pass LXD's 63 characters mid-session."""
    from pytest_lxdsnap.session.reuse import TOKEN_LENGTH, too_long_message

    token_length = len(worker) + 6 if worker else TOKEN_LENGTH  # the session's token (see pytest_runtestloop)
    numbered = sum(uses.values()) + options.lxd_prepare_ahead  # bounds the clone and the -failed-<n> counters
    for name in sorted(uses):
        message = too_long_message(name, uses=numbered, reuse=options.lxd_reuse, keep_failed=options.lxd_keep_failed,
                                   token_length=token_length)
        if message:
            raise pytest.UsageError(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Connect once, before the first test, and only when some test carries the marker and will run: a run
    that executes no test (``--collect-only``, ``--setup-plan``; IDEs collect on every save) touches nothing."""
    config = session.config
    if config.option.collectonly or getattr(config.option, "setupplan", False):
        return
    if not any(item.get_closest_marker(MARKER) for item in session.items):
        return
    from pytest_lxdsnap.hookcalls import session_callbacks
    from pytest_lxdsnap.safety.ownership import SessionIdentity
    from pytest_lxdsnap.session.core import LxdSession

    endpoint, specs, worker = config.stash[ENDPOINT], config.stash[SPECS], _worker(config)
    identity = SessionIdentity(token=f"{worker}{secrets.token_hex(3)}") if worker else SessionIdentity()
    workerinput = getattr(config, "workerinput", {})
    lxd = LxdSession(endpoint, specs, config.stash[OPTIONS], identity=identity, worker=worker,
                     existing=config.stash[EXISTING],
                     run=workerinput.get("testrunuid") if worker else None, workers=workerinput.get("workercount", 1))
    lxd.on_provision, lxd.on_ready = session_callbacks(config, lxd)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and config.get_verbosity() >= 0:
        lxd.on_progress = report.LaunchProgress(reporter, capture)
    try:
        lxd.connect()
        if endpoint.insecure:
            lxd.notices.append(insecure_warning(endpoint, pinned_fingerprint(lxd.client)))
        requests = [r for item in session.items for r in requests_for(item, specs)]
        config.stash[SESSION] = lxd
        lxd.plan(requests)
    except (LxdUnreachable, ConfigError, LxdSnapError) as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Remember the next test: a class- or module-scoped state is kept when it uses the same one."""
    item.stash[NEXT_ITEM] = nextitem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report: --lxd-keep-failed keeps the state of tests that failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture(autouse=True)
def _lxdsnap_marker(request: pytest.FixtureRequest) -> None:
    """Reset the containers of marked tests; unmarked tests pay one marker lookup."""
    if request.node.get_closest_marker(MARKER) is not None:
        request.getfixturevalue("_lxdsnap_containers")


@pytest.fixture
def _lxdsnap_containers(request: pytest.FixtureRequest) -> Generator[Containers]:
    from pytest_lxdsnap.handle import Containers
    from pytest_lxdsnap.hookcalls import around_reset

    lxd = request.config.stash[SESSION]
    specs = request.config.stash[SPECS]
    error = None
    checkouts: list[Checkout] = []
    requests: list[Request] = []
    started = time.perf_counter()
    try:
        requests = requests_for(request.node, specs)
        checkouts = lxd.acquire(requests)
    except LxdSnapError as exc:
        error = str(exc)
    waited = time.perf_counter() - started
    if error:  # failed outside the except block, so pytest shows the message alone, once
        pytest.fail(error, pytrace=False)
    containers = Containers(request.node.nodeid, {c.tracked.name: lxd.container(c.tracked.name, c.instance)
                                                  for c in checkouts}, root=request.config.rootpath)
    yield containers
    containers.close()
    reports = request.node.stash.get(REPORTS, {})
    if request.config.stash[OPTIONS].lxd_keep_failed and any(r.failed for r in reports.values()):
        for line in lxd.keep_failed(checkouts, request.node.nodeid):
            request.node.add_report_section("teardown", "lxdsnap", line)
    nextitem = request.node.stash.get(NEXT_ITEM, None)
    upcoming = set(requests_for(nextitem, specs)) if nextitem is not None else set()
    keep = {r.name for r in requests if r in upcoming and not r.scope_key.startswith("function:")}
    after_reset = around_reset(request.node, lxd, checkouts, keep)
    started = time.perf_counter()
    try:
        lxd.release(checkouts, keep=keep)
    except ResetError as exc:
        error = str(exc)
    else:
        after_reset()
    seconds, names = waited + time.perf_counter() - started, ", ".join(r.name for r in requests)
    request.config.stash.setdefault(report.DURATIONS, []).append((seconds, request.node.nodeid, names))
    request.node.user_properties.append((report.PROPERTY, (round(seconds, 3), names)))
    if error:
        pytest.fail(error, pytrace=False)


@pytest.fixture
def lxd(request: pytest.FixtureRequest) -> Containers:
    """The containers of this test's ``@pytest.mark.lxd(...)``: ``lxd["web"].exec(["hostname"])``."""
    if request.node.get_closest_marker(MARKER) is None:
        pytest.fail(
            f"{request.node.nodeid} uses the lxd fixture without declaring containers: "
            "add @pytest.mark.lxd(\"<name>\", ...) naming the containers it uses",
            pytrace=False,
        )
    containers: Containers = request.getfixturevalue("_lxdsnap_containers")
    return containers


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After the last fixture teardown (and so the last reset): remove what the session made."""
    from pytest_lxdsnap.hookcalls import cleanup_keep

    lxd = session.config.stash.get(SESSION, None)
    failed = session.config.stash.get(report.FAILED, False)  # a worker's leftovers, on the xdist controller
    guard = session.config.pluginmanager.get_plugin("lxdsnap-interrupt-guard")
    if guard is not None:
        guard.cleaning = True
    if lxd is not None:
        try:
            keep = cleanup_keep(session.config, lxd)
        except LxdSnapError as exc:
            lxd.problems.append(str(exc))
            keep = set()
        failed = report.finished(session.config, lxd, lxd.finish(keep=keep)) or failed
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist controller: a worker finished; keep its lxdsnap report."""
    report.from_worker(node.config, getattr(node, "workeroutput", {}) or {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    report.write(terminalreporter, config, config.stash[OPTIONS].lxd_durations)
