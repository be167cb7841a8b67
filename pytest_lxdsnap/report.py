"""The session's report: the lxdsnap summary section, --lxd-durations, and relaying both from
pytest-xdist workers to the controller (which prints them and fails the run on leftovers)."""

from __future__ import annotations

import shutil
import statistics
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from _pytest.capture import CaptureManager

    from pytest_lxdsnap.model import Leftover, Tracked
    from pytest_lxdsnap.session.core import LxdSession

Line = tuple[str, str]  # (colour: "", "red" or "yellow"; text)
Row = dict[str, str]  # one container's row of the summary table, by column
COLUMNS = ("container", "kind", "instance", "resets", "strategies", "resetting", "median", "leftovers")
ROWS: pytest.StashKey[list[Row]] = pytest.StashKey()
LINES: pytest.StashKey[list[Line]] = pytest.StashKey()
DURATIONS: pytest.StashKey[list[tuple[float, str, str]]] = pytest.StashKey()
FAILED: pytest.StashKey[bool] = pytest.StashKey()
WORKER_KEY = "lxdsnap"
PROPERTY = "lxdsnap_reset"  # user property: (seconds waiting for clean containers, container names)


def container_row(t: Tracked, leftovers: int) -> Row:
    used = ", ".join(f"{name} {count}" for name, count in t.strategies.most_common())
    median = f"{statistics.median(t.reset_times):.2f} s" if t.reset_times else "-"
    return {"container": t.name, "kind": t.kind, "instance": t.instance, "resets": str(t.resets),
            "strategies": used or "unused", "resetting": f"{t.reset_seconds:.2f} s", "median": median,
            "leftovers": str(leftovers)}


def build(lxd: LxdSession, leftovers: list[Leftover]) -> tuple[list[Row], list[Line]]:
    """One table row per container, then a line for each leftover, problem, note and kept state."""
    rows = []
    for t in lxd.tracked.values():
        rows.append(container_row(t, sum(1 for lo in leftovers if lo.container in (t.name, t.instance))))
    lines: list[Line] = [("red", f"LEFTOVER {lo.what}") for lo in leftovers]
    lines += [("red", f"PROBLEM {problem}") for problem in lxd.problems]
    lines += [("yellow", f"NOTE {notice}") for notice in lxd.notices]
    lines += [("yellow", f"KEPT {kept}") for kept in lxd.kept]
    return rows, lines


def finished(config: pytest.Config, lxd: LxdSession, leftovers: list[Leftover]) -> bool:
    """Record the report; True when the run must fail (leftovers or problems). A worker sends it on."""
    rows, lines = build(lxd, leftovers) if lxd.tracked else ([], [])
    failed = bool(leftovers or lxd.problems)
    config.stash[ROWS], config.stash[LINES] = rows, lines
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        worker = getattr(config, "workerinput", {}).get("workerid", "worker")
        workeroutput[WORKER_KEY] = {"rows": [{"worker": worker, **row} for row in rows],
                                    "lines": [(colour, f"[{worker}] {text}") for colour, text in lines],
                                    "failed": failed, "durations": config.stash.get(DURATIONS, [])}
    return failed


def from_worker(config: pytest.Config, workeroutput: dict[str, Any]) -> None:
    """On the xdist controller: take in what a worker reported."""
    relayed = workeroutput.get(WORKER_KEY)
    if not relayed:
        return
    config.stash.setdefault(ROWS, []).extend(relayed["rows"])
    config.stash.setdefault(LINES, []).extend((c, t) for c, t in relayed["lines"])
    config.stash.setdefault(DURATIONS, []).extend(tuple(d) for d in relayed["durations"])
    if relayed["failed"]:
        config.stash[FAILED] = True


def table(rows: list[Row]) -> list[Line]:
    """The rows as aligned text under a header; a worker column under pytest-xdist; red with leftovers."""
    columns = (("worker",) if any("worker" in row for row in rows) else ()) + COLUMNS
    rows = sorted(rows, key=lambda row: (row.get("worker", ""), row["container"]))
    widths = [max(len(column), *(len(row.get(column, "")) for row in rows)) for column in columns]

    def text(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return [("", text(list(columns)))] + [("red" if row["leftovers"] != "0" else "",
                                           text([row.get(column, "") for column in columns])) for row in rows]


def write(terminalreporter: pytest.TerminalReporter, config: pytest.Config, slowest: int) -> None:
    rows, lines = config.stash.get(ROWS, []), config.stash.get(LINES, [])
    if rows or lines:
        terminalreporter.write_sep("-", "lxdsnap")
        for colour, text in (table(rows) if rows else []) + lines:
            terminalreporter.write_line(text, **({colour: True} if colour else {}))
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
                seconds, names = cast(tuple[float, str], value)
                reporter.write_line(f"    lxdsnap: {names}: {seconds:.2f} s waiting for clean containers")


class LaunchProgress:
    """What a declared container's launch is doing while a test waits for it: on a terminal one line per
    container, rewritten in place as the stage and the seconds change; elsewhere (logs, CI) a line per stage."""

    def __init__(self, reporter: pytest.TerminalReporter, capture: CaptureManager) -> None:
        self.reporter, self.capture = reporter, capture
        self.stages: dict[str, str | None] = {}

    def __call__(self, name: str, stage: str | None, seconds: float) -> None:
        text = (f"lxdsnap: {name}: {stage} ({seconds:.0f} s)" if stage is not None
                else f"lxdsnap: {name}: ready after {seconds:.1f} s")
        with self.capture.global_and_fixture_disabled():  # it runs inside a test's setup
            if self.reporter.isatty():
                if name not in self.stages:
                    self.reporter.ensure_newline()
                self.reporter.rewrite(text[:shutil.get_terminal_size().columns - 1], erase=True)  # no wrapping
                if stage is None:
                    self.reporter.write("\n", flush=True)
                else:
                    self.reporter.flush()
            elif stage is None or self.stages.get(name) != stage:
                self.reporter.write_line(text)
        self.stages[name] = stage
        if stage is None:
            del self.stages[name]
