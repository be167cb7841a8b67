"""pytest glue: options, the ``lxd`` marker, the ``lxd`` fixture, cleanup and the summary.

The LXD work lives in :mod:`pytest_lxdsnap.session.core`; tests without the marker pay nothing and no
connection to LXD is opened for a suite that has no marked test.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import sys
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_lxdsnap import report
from pytest_lxdsnap.declarations import (
    DEFAULT_LEASE_WAIT,
    DEFAULT_MAX_CLONES,
    DEFAULT_PREPARE_AHEAD,
    DEFAULT_SNAPSHOT_TTL,
    NAME,
    ContainerSpec,
    load,
)
from pytest_lxdsnap.errors import ConfigError, LxdSnapError, LxdUnreachable, ResetError, UndeclaredContainer
from pytest_lxdsnap.lxd.connection import (
    DEFAULT_TIMEOUT,
    Endpoint,
    check_tls_files,
    insecure_warning,
    pinned_fingerprint,
    trusted_on_first_use,
)
from pytest_lxdsnap.session.strategy import SCOPES, STRATEGIES, check

if TYPE_CHECKING:  # these import pylxd, which a suite without marked tests never loads
    from pytest_lxdsnap.handle import Container
    from pytest_lxdsnap.session.core import Checkout, LxdSession, Request

SETTINGS: pytest.StashKey[Settings] = pytest.StashKey()
SESSION: pytest.StashKey[LxdSession] = pytest.StashKey()
NEXT_ITEM: pytest.StashKey[pytest.Item | None] = pytest.StashKey()
REPORTS: pytest.StashKey[dict[str, pytest.TestReport]] = pytest.StashKey()
REQUESTS: pytest.StashKey[list[Request]] = pytest.StashKey()
MARKER = "lxd"
MARKER_OPTIONS = {
    "strategy": "how this test gets a clean state: " + ", ".join(STRATEGIES),
    "scope": "how long the state lives: " + ", ".join(SCOPES),
}
MARKER_HELP = (
    "lxd(*names, strategy=None, scope=None): the LXD containers this test uses, by declared name "
    "([tool.lxdsnap.containers.<name>]) or existing instance name; each gets a clean state for the test"
)
OPTIONS = [
    ("--lxd-endpoint", "lxd_endpoint", "Unix socket path or https:// URL of LXD (default: the local socket)"),
    ("--lxd-project", "lxd_project", "LXD project of the containers (default: LXD's default project)"),
    ("--lxd-cert", "lxd_cert", "Client certificate (PEM) for an https:// endpoint (default: ~/.config/lxc/client.crt)"),
    ("--lxd-key", "lxd_key", "Private key of --lxd-cert (default: ~/.config/lxc/client.key)"),
    ("--lxd-server-cert", "lxd_server_cert",
     "Pin the server's certificate (PEM) of an https:// endpoint (default: verify against the system's CAs)"),
    ("--lxd-snapshot-ttl", "lxd_snapshot_ttl",
     f"Seconds after which LXD deletes a plugin snapshot even if the run crashed (default {DEFAULT_SNAPSHOT_TTL:g})"),
    ("--lxd-timeout", "lxd_timeout", f"Seconds to wait for one LXD API request (default {DEFAULT_TIMEOUT:g})"),
    ("--lxd-strategy", "lxd_strategy",
     "Default reset strategy: " + ", ".join(STRATEGIES) + " (default auto: clones on copy-on-write pools for "
     "declared containers, in place otherwise)"),
    ("--lxd-prepare-ahead", "lxd_prepare_ahead",
     f"Clones of a declared container prepared ahead of the tests (default {DEFAULT_PREPARE_AHEAD})"),
    ("--lxd-lease-wait", "lxd_lease_wait",
     f"Seconds to wait for an existing container another live session holds (default {DEFAULT_LEASE_WAIT:g})"),
    ("--lxd-max-clones", "lxd_max_clones",
     f"At most this many clones exist at once in this session, prepared, in use or being deleted "
     f"(default {DEFAULT_MAX_CLONES})"),
]


INSECURE_HELP = "Do not verify the https:// endpoint's certificate (a warning says so; prefer --lxd-server-cert)"
REUSE_HELP = ("Keep provisioned declared containers and their baselines between runs (rebuilt when the "
              "declaration changes; `lxdsnap gc` removes them)")
KEEP_FAILED_HELP = ("When a test fails, keep its containers' state (a clone, copy or snapshot that expires) "
                    "before the reset, and print the lxc commands to inspect it")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_lxdsnap import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lxdsnap", "LXD container snapshots (pytest-lxdsnap)")
    for flag, ini, help_text in OPTIONS:
        group.addoption(flag, dest=ini, default=None, help=help_text)
        parser.addini(ini, help_text, default=None)
    _switch(parser, group, "lxd_insecure", INSECURE_HELP)
    _switch(parser, group, "lxd_reuse", REUSE_HELP)
    group.addoption("--lxd-durations", dest="lxd_durations", type=int, default=0, metavar="N",
                    help="List the N tests that waited longest for clean containers (0: none)")
    _switch(parser, group, "lxd_keep_failed", KEEP_FAILED_HELP)


def _switch(parser: pytest.Parser, group: Any, name: str, help_text: str) -> None:
    """A boolean with its ini twin and a ``--no-`` twin, so a value set in ini can be switched off for one run."""
    flag = "--" + name.replace("_", "-")
    group.addoption(flag, dest=name, action="store_true", default=None, help=f"{help_text} (default off)")
    group.addoption(f"--no-{flag[2:]}", dest=name, action="store_false", default=None,
                    help=f"Turn {flag} off for this run, whatever the ini file says")
    parser.addini(name, help_text, type="bool", default=False)


def _flag(config: pytest.Config, name: str) -> bool:
    value = config.getoption(name)
    return bool(config.getini(name) if value is None else value)


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name)
    return value if value is not None else config.getini(name)


def _seconds(config: pytest.Config, name: str, default: float) -> float:
    raw = _option(config, name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(f"{name} (--{name.replace('_', '-')}): expected a positive number of seconds, "
                                f"got {raw!r}")
    return value


def _whole(config: pytest.Config, name: str, default: int, *, minimum: int) -> int:
    raw = _option(config, name)
    if raw in (None, ""):
        return default
    if not str(raw).isdigit() or int(raw) < minimum:
        raise pytest.UsageError(f"{name} (--{name.replace('_', '-')}): expected a whole number of at least {minimum}, "
                                f"got {raw!r}")
    return int(raw)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        return []
    switches = [name for name, on in (("reuse", settings.reuse), ("keep failed", settings.keep_failed)) if on]
    line = (f"lxdsnap: {settings.endpoint.describe()}, strategy {settings.strategy}, snapshot ttl "
            f"{settings.snapshot_ttl:g} s, prepare ahead {settings.prepare_ahead}, max clones {settings.max_clones}, "
            f"lease wait {settings.lease_wait:g} s{''.join(f', {name}' for name in switches)}")
    if not settings.endpoint.insecure:
        return [line]
    if settings.endpoint.fingerprint is None:  # trust on first use, once: the session pins what this shows
        try:
            settings = replace(settings, endpoint=trusted_on_first_use(settings.endpoint))
            config.stash[SETTINGS] = settings
        except LxdSnapError:
            pass  # the session says why when it connects
    return [line, "lxdsnap: WARNING " + insecure_warning(settings.endpoint, settings.endpoint.fingerprint)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    pyproject = config.inipath if config.inipath and config.inipath.name == "pyproject.toml" else None
    try:
        specs = load(pyproject or Path(config.rootpath) / "pyproject.toml")
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    endpoint = Endpoint(
        url=_option(config, "lxd_endpoint") or None,
        project=_option(config, "lxd_project") or None,
        timeout=_seconds(config, "lxd_timeout", DEFAULT_TIMEOUT),
        cert=_option(config, "lxd_cert") or None,
        key=_option(config, "lxd_key") or None,
        server_cert=_option(config, "lxd_server_cert") or None,
        insecure=_flag(config, "lxd_insecure"),
    )
    try:
        check_tls_files(endpoint)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    ttl = _seconds(config, "lxd_snapshot_ttl", DEFAULT_SNAPSHOT_TTL)
    try:
        strategy = check(_option(config, "lxd_strategy") or "auto", "lxd_strategy (--lxd-strategy)", STRATEGIES)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    max_clones = _whole(config, "lxd_max_clones", DEFAULT_MAX_CLONES, minimum=1)
    ahead_raw = _option(config, "lxd_prepare_ahead") or str(DEFAULT_PREPARE_AHEAD)
    if not ahead_raw.isdigit():
        raise pytest.UsageError(f"lxd_prepare_ahead (--lxd-prepare-ahead): expected a whole number of clones "
                                f"(0 prepares none ahead), got {ahead_raw!r}")
    keep_failed = _flag(config, "lxd_keep_failed")
    lease_wait = _seconds(config, "lxd_lease_wait", DEFAULT_LEASE_WAIT)
    reuse = _flag(config, "lxd_reuse")
    config.stash[SETTINGS] = Settings(endpoint, specs, ttl, strategy, int(ahead_raw), bool(keep_failed), lease_wait,
                                      reuse, max_clones)
    config.pluginmanager.register(InterruptGuard(config), "lxdsnap-interrupt-guard")
    if config.get_verbosity() >= 1:
        config.pluginmanager.register(report.VerboseResets(config), "lxdsnap-verbose-resets")


@dataclass(frozen=True)
class Settings:
    """What the session needs to start talking to LXD, read once at configure time."""

    endpoint: Endpoint
    specs: dict[str, ContainerSpec]
    snapshot_ttl: float
    strategy: str = "auto"
    prepare_ahead: int = DEFAULT_PREPARE_AHEAD
    keep_failed: bool = False
    lease_wait: float = DEFAULT_LEASE_WAIT
    reuse: bool = False
    max_clones: int = DEFAULT_MAX_CLONES


class InterruptGuard:
    """Ctrl-C, SIGTERM (a cancelled CI job) and SIGHUP (a dropped SSH session) all stop the run the same way:
    the plugin still resets and cleans up, and pytest exits non-zero. A second signal, however soon it comes,
    exits at once with the exact commands that finish the job. Handlers the user installed stay theirs."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cleaning = False  # the session's cleanup runs: a first signal no longer interrupts it
        self.received = ""
        self.previous: dict[int, Any] = {}
        for signum in self.SIGNALS:
            if signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler):
                continue
            try:
                self.previous[signum] = signal.signal(signum, self._first)
            except ValueError:  # not the main thread: leave signals to whoever runs us
                break

    def pytest_unconfigure(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _first(self, signum: int, frame: object) -> None:
        for other in self.previous:
            signal.signal(other, self._second)
        self.received = signal.Signals(signum).name
        if self.cleaning:  # cleaning up already: let it finish unless asked again
            self._say_now(f"\nlxdsnap: {self.received}: cleaning up; send it again to stop at once\n")
            return
        raise KeyboardInterrupt(self.received)

    def pytest_keyboard_interrupt(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.received not in ("", "SIGINT"):
            reporter.write_line(f"lxdsnap: {self.received}: stopping; resetting the containers and cleaning up "
                                "(send it again to stop at once)")

    def _second(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP and self.received == "SIGHUP":
            return  # a lost terminal often sends two (the kernel's, and the shell's): one is not a second ask
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        lxd = self.config.stash.get(SESSION, None)
        lines = ["", f"lxdsnap: second {what}: cleanup stopped. To finish it, run:", "  lxdsnap gc"]
        if lxd is not None:
            lines.append("(it restores these from their baselines and deletes this session's clones; by hand:")
            cmd = lxd.commands
            lines += [f"  {cmd.restore(t.instance, t.snapshot)} && {cmd.delete_snapshot(t.instance, t.snapshot)}"
                      for t in list(lxd.tracked.values()) if not t.declared]
            lines += [f"  {cmd(f'delete --force {t.instance}')}" for t in list(lxd.tracked.values()) if t.declared]
            lines.append(")")
        self._say_now("\n".join(lines) + "\n")
        os._exit(pytest.ExitCode.INTERRUPTED)

    def _say_now(self, text: str) -> None:
        """Write to the terminal from a signal handler, even while a test's output is captured."""
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        try:
            if capture is not None:
                capture.suspend_global_capture(in_=False)
        except Exception:  # noqa: BLE001 - capture half torn down: write anyway
            pass
        _say(text)


def _say(text: str) -> None:
    """Write to stderr from a signal handler (the terminal may be gone: SIGHUP)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _validate_marker(*names: str, **options: object) -> tuple[str, ...]:
    """The marker's API: ``@pytest.mark.lxd("web", "db")``."""
    if not names:
        raise ValueError("@pytest.mark.lxd needs at least one container name, e.g. @pytest.mark.lxd(\"web\")")
    for name in names:
        if not isinstance(name, str) or not (NAME.match(name) or _is_instance_name(name)):
            raise ValueError(f"@pytest.mark.lxd: {name!r} is not a container name (letters, digits and '-')")
    for option, value in options.items():
        if option == "strategy":
            check(value, "@pytest.mark.lxd strategy", STRATEGIES)
        elif option == "scope":
            check(value, "@pytest.mark.lxd scope", SCOPES)
        else:
            valid = "; ".join(f"{k} ({v})" for k, v in MARKER_OPTIONS.items())
            raise ValueError(f"@pytest.mark.lxd: unknown option {option!r}; valid options: {valid}")
    return names


def _is_instance_name(name: str) -> bool:
    return 0 < len(name) <= 63 and name[0].isalpha() and all(c.isalnum() or c == "-" for c in name)


def marker_names(item: pytest.Item) -> tuple[str, ...]:
    """The container names of every ``lxd`` marker on the item, its class and module (closest first)."""
    names: list[str] = []
    for mark in item.iter_markers(MARKER):
        for name in _validate_marker(*mark.args, **mark.kwargs):
            if name not in names:
                names.append(name)
    return tuple(names)


def marker_option(item: pytest.Item, option: str) -> str | None:
    """The closest ``lxd`` marker's value of ``option`` (test, then class, then module)."""
    for mark in item.iter_markers(MARKER):
        if option in mark.kwargs:
            return mark.kwargs[option]
    return None


def requests_for(item: pytest.Item, specs: dict[str, ContainerSpec]) -> list[Request]:
    """What the item asks of each container: strategy and the key of the scope its state lives in
    (worked out once per item: the plan, its own fixture and the previous test's teardown all ask)."""
    if REQUESTS in item.stash:
        return item.stash[REQUESTS]
    from pytest_lxdsnap.hookcalls import choose_strategy
    from pytest_lxdsnap.session.core import Request

    requested = marker_option(item, "strategy")
    scope = marker_option(item, "scope")
    found = []
    for name in marker_names(item):
        spec = specs.get(name)
        strategy = choose_strategy(item, name, spec is not None, requested) or requested
        where = scope or (spec.scope if spec else None) or "function"
        node: pytest.Item | pytest.Collector | None = item
        if where == "class":
            node = item.getparent(pytest.Class) or item.getparent(pytest.Module)
        elif where == "module":
            node = item.getparent(pytest.Module)
        found.append(Request(name, strategy, f"{where}:{(node or item).nodeid}"))
    item.stash[REQUESTS] = found
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[SETTINGS]
    specs = settings.specs
    uses: dict[str, int] = {}  # declared container -> the tests that use it
    for item in items:
        try:
            names = marker_names(item)
        except ValueError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        for name in names:
            if name in specs:
                uses[name] = uses.get(name, 0) + 1
        undeclared = [n for n in names if n not in specs]
        if marker_option(item, "strategy") == "clone" and undeclared:
            raise pytest.UsageError(
                f"{item.nodeid}: strategy 'clone' needs declared containers, and {undeclared[0]!r} is an existing "
                "instance (it keeps its identity and is restored in place). Use strategy='inplace' for it, or "
                f"declare it in [tool.lxdsnap.containers.{undeclared[0]}]"
            )
    check_generated_names(config, settings, uses)


def check_generated_names(config: pytest.Config, settings: Settings, uses: dict[str, int]) -> None:
    """Refuse now a declared name whose clones or kept copies would pass LXD's 63 characters mid-session."""
    if not uses:
        return
    from pytest_lxdsnap.session.reuse import TOKEN_LENGTH, too_long_message

    worker = getattr(config, "workerinput", {}).get("workerid")
    token_length = len(worker) + 6 if worker else TOKEN_LENGTH  # the session's token (see pytest_runtestloop)
    numbered = sum(uses.values()) + settings.prepare_ahead  # bounds the clone and the -failed-<n> counters
    for name in sorted(uses):
        message = too_long_message(name, uses=numbered, reuse=settings.reuse, keep_failed=settings.keep_failed,
                                   token_length=token_length)
        if message:
            raise pytest.UsageError(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Connect once, before the first test, and only when some test carries the marker and will run: a run
    that executes no test (``--collect-only``, ``--setup-plan``; IDEs collect on every save) touches nothing."""
    option = session.config.option
    if option.collectonly or getattr(option, "setupplan", False):
        return
    if not any(item.get_closest_marker(MARKER) for item in session.items):
        return
    from pytest_lxdsnap.hookcalls import session_callbacks
    from pytest_lxdsnap.safety.ownership import SessionIdentity
    from pytest_lxdsnap.session.core import LxdSession

    settings = session.config.stash[SETTINGS]
    worker = getattr(session.config, "workerinput", {}).get("workerid")  # a pytest-xdist worker
    identity = SessionIdentity(token=f"{worker}{secrets.token_hex(3)}") if worker else SessionIdentity()
    lxd = LxdSession(settings.endpoint, settings.specs, snapshot_ttl=settings.snapshot_ttl, identity=identity,
                     default_strategy=settings.strategy, prepare_ahead=settings.prepare_ahead,
                     lease_wait=settings.lease_wait, take_turns=worker is not None, reuse=settings.reuse,
                     worker=int(worker[2:]) if worker and worker[2:].isdigit() else 0,  # "gw3" -> 3
                     max_clones=settings.max_clones)
    lxd.on_provision, lxd.on_ready = session_callbacks(session.config, lxd)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    capture = session.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and session.config.get_verbosity() >= 0:
        lxd.on_progress = report.LaunchProgress(reporter, capture)
    try:
        lxd.connect()
        if settings.endpoint.insecure:
            lxd.notices.append(insecure_warning(settings.endpoint, pinned_fingerprint(lxd.client)))
        requests = [r for item in session.items for r in requests_for(item, settings.specs)]
        session.config.stash[SESSION] = lxd
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


class Containers(Mapping[str, "Container"]):
    """What the ``lxd`` fixture returns: ``lxd["web"]`` is the container the marker declared as "web"."""

    def __init__(self, nodeid: str, containers: dict[str, Container]) -> None:
        self._nodeid = nodeid
        self._containers = containers

    def __getitem__(self, name: str) -> Container:
        __tracebackhide__ = True
        try:
            return self._containers[name]
        except KeyError:
            declared = ", ".join(f'"{n}"' for n in self._containers)
            wanted = ", ".join(f'"{n}"' for n in [*self._containers, name])
            raise UndeclaredContainer(
                f"container {name!r} is not declared for {self._nodeid} (declared: {declared}); "
                f"add it to the marker: @pytest.mark.lxd({wanted})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._containers)

    def __len__(self) -> int:
        return len(self._containers)


@pytest.fixture(autouse=True)
def _lxdsnap_marker(request: pytest.FixtureRequest) -> None:
    """Reset the containers of marked tests; unmarked tests pay one marker lookup."""
    if request.node.get_closest_marker(MARKER) is not None:
        request.getfixturevalue("_lxdsnap_containers")


@pytest.fixture
def _lxdsnap_containers(request: pytest.FixtureRequest) -> Generator[Containers]:
    from pytest_lxdsnap.handle import Container
    from pytest_lxdsnap.hookcalls import around_reset

    lxd = request.config.stash[SESSION]
    specs = request.config.stash[SETTINGS].specs
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
    yield Containers(request.node.nodeid,
                     {c.tracked.name: Container(lxd.client_for(c.tracked.name), c.tracked.name, c.instance,
                                                disposable=c.tracked.declared) for c in checkouts})
    reports = request.node.stash.get(REPORTS, {})
    if request.config.stash[SETTINGS].keep_failed and any(r.failed for r in reports.values()):
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
    return request.getfixturevalue("_lxdsnap_containers")


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
    report.write(terminalreporter, config)
