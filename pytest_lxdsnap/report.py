"""The session's report: the lxdsnap summary section, --lxd-durations, and relaying both from
pytest-xdist workers to the controller (which prints them and fails the run on leftovers)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .session import Leftover, LxdSession, Tracked

Line = tuple[str, str]  # (colour: "", "red" or "yellow"; text)
LINES: pytest.StashKey[list[Line]] = pytest.StashKey()
DURATIONS: pytest.StashKey[list[tuple[float, str, str]]] = pytest.StashKey()
FAILED: pytest.StashKey[bool] = pytest.StashKey()
WORKER_KEY = "lxdsnap"
PROPERTY = "lxdsnap_reset"  # user property: (seconds waiting for clean containers, container names)


def container_line(t: Tracked, leftovers: int) -> str:
    median = f", median {statistics.median(t.reset_times):.2f} s" if t.reset_times else ""
    used = ", ".join(f"{name} {count}" for name, count in t.strategies.most_common())
    return (f"{t.name} ({t.kind}, instance {t.instance}): {t.resets} resets ({used or 'unused'}), "
            f"{t.reset_seconds:.2f} s resetting{median}, leftovers {leftovers}")


def build(lxd: LxdSession, leftovers: list[Leftover]) -> list[Line]:
    lines: list[Line] = []
    for t in lxd.tracked.values():
        mine = sum(1 for lo in leftovers if lo.container in (t.name, t.instance))
        lines.append(("red" if mine else "", container_line(t, mine)))
    lines += [("red", f"LEFTOVER {lo.what}") for lo in leftovers]
    lines += [("red", f"PROBLEM {problem}") for problem in lxd.problems]
    lines += [("yellow", f"NOTE {notice}") for notice in lxd.notices]
    lines += [("yellow", f"KEPT {kept}") for kept in lxd.kept]
    return lines


def finished(config: pytest.Config, lxd: LxdSession, leftovers: list[Leftover]) -> bool:
    """Record the report; True when the run must fail (leftovers or problems). A worker sends it on."""
    lines = build(lxd, leftovers) if lxd.tracked else []
    failed = bool(leftovers or lxd.problems)
    config.stash[LINES] = lines
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        worker = getattr(config, "workerinput", {}).get("workerid", "worker")
        workeroutput[WORKER_KEY] = {"lines": [(colour, f"[{worker}] {text}") for colour, text in lines],
                                    "failed": failed, "durations": config.stash.get(DURATIONS, [])}
    return failed


def from_worker(config: pytest.Config, workeroutput: dict[str, Any]) -> None:
    """On the xdist controller: take in what a worker reported."""
    relayed = workeroutput.get(WORKER_KEY)
    if not relayed:
        return
    config.stash.setdefault(LINES, []).extend((c, t) for c, t in relayed["lines"])
    config.stash.setdefault(DURATIONS, []).extend(tuple(d) for d in relayed["durations"])
    if relayed["failed"]:
        config.stash[FAILED] = True


def write(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(LINES, [])
    if lines:
        terminalreporter.write_sep("-", "lxdsnap")
        for colour, text in lines:
            terminalreporter.write_line(text, **({colour: True} if colour else {}))
    slowest = config.getoption("lxd_durations")
    durations = config.stash.get(DURATIONS, [])
    if slowest and durations:
        terminalreporter.write_sep("-", f"slowest {slowest} lxd resets (time the test waited for clean containers)")
        for seconds, nodeid, names in sorted(durations, reverse=True)[:slowest]:
            terminalreporter.write_line(f"{seconds:.2f}s {names}: {nodeid}")


class VerboseResets:
    """With -v: each test's time waiting for clean containers, on a line under the test (also under xdist,
    where the reports reach the controller with their user properties)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or report.when != "teardown":
            return
        for name, value in report.user_properties:
            if name == PROPERTY:
                seconds, names = value
                reporter.write_line(f"    lxdsnap: {names}: {seconds:.2f} s waiting for clean containers")
