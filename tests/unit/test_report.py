"""The session's report (pytest_lxdsnap.report) on made-up sessions: one table row per container, the lines for
leftovers, problems, notes and kept states, the worker column under pytest-xdist, relaying from workers, and the
--lxd-durations section. No daemon, no pytest run: fake Tracked and Leftover data and a fake terminal."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_lxdsnap import report
from pytest_lxdsnap.model import Leftover, Tracked

from ..helpers import summary


def tracked(name: str, *, declared: bool = False, resets: tuple[float, ...] = (), **strategies: int) -> Tracked:
    instance = f"lxdsnap-{name}-ab12cd34" if declared else name
    return Tracked(name, instance, declared, "lxdsnap-ab12cd34-base", True, 0.0, reset_times=list(resets),
                   strategies=Counter(strategies))


@dataclass
class FakeSession:
    """What the report reads of an LxdSession."""

    tracked: dict[str, Tracked] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class FakeConfig:
    def __init__(self, workerid: str | None = None) -> None:
        self.stash = pytest.Stash()
        if workerid is not None:
            self.workerinput = {"workerid": workerid}
            self.workeroutput: dict[str, Any] = {}


class FakeTerminal:
    """A terminal reporter that keeps what it was asked to write, with the colour asked for."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(("", f"{sep * 10} {title} {sep * 10}"))

    def write_line(self, text: str, **markup: bool) -> None:
        self.lines.append((",".join(markup), text))

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


def session_of(*containers: Tracked, **lists: list[str]) -> FakeSession:
    return FakeSession({t.name: t for t in containers}, **lists)


def test_one_row_per_container_with_its_figures():
    web = tracked("web", declared=True, resets=(0.2, 0.4, 1.0), clone=2, inplace=1)
    mine = tracked("mine")
    rows, lines = report.build(session_of(web, mine), [])  # type: ignore[arg-type]
    assert rows == [
        {"container": "web", "kind": "declared", "instance": "lxdsnap-web-ab12cd34", "resets": "3",
         "strategies": "clone 2, inplace 1", "resetting": "1.60 s", "median": "0.40 s", "leftovers": "0"},
        {"container": "mine", "kind": "existing", "instance": "mine", "resets": "0", "strategies": "unused",
         "resetting": "0.00 s", "median": "-", "leftovers": "0"},
    ]
    assert lines == []


def test_leftovers_count_on_their_container_and_every_kind_of_line_follows_in_order():
    web, mine = tracked("web", declared=True), tracked("mine")
    leftovers = [Leftover("web", "instance lxdsnap-web-ab12cd34-3"), Leftover("lxdsnap-web-ab12cd34", "snapshot x"),
                 Leftover("mine", "config user.lxdsnap.owner on mine"), Leftover("other", "profile p")]
    lxd = session_of(web, mine, problems=["resetting failed"], notices=["dir pool"], kept=["kept web"])
    rows, lines = report.build(lxd, leftovers)  # type: ignore[arg-type]
    assert [(row["container"], row["leftovers"]) for row in rows] == [("web", "2"), ("mine", "1")]  # by name/instance
    assert lines == [("red", "LEFTOVER instance lxdsnap-web-ab12cd34-3"), ("red", "LEFTOVER snapshot x"),
                     ("red", "LEFTOVER config user.lxdsnap.owner on mine"), ("red", "LEFTOVER profile p"),
                     ("red", "PROBLEM resetting failed"), ("yellow", "NOTE dir pool"), ("yellow", "KEPT kept web")]


def test_the_table_is_aligned_sorted_and_red_where_something_was_left():
    rows, _ = report.build(session_of(tracked("web", declared=True, resets=(1.5,), clone=1), tracked("a-much-longer"),
                                      tracked("db", declared=True)),  # type: ignore[arg-type]
                           [Leftover("db", "instance lxdsnap-db-ab12cd34")])
    table = report.table(rows)
    header, *body = table
    assert header == ("", "container      kind      instance              resets  strategies  resetting  median  "
                          "leftovers")
    assert [text.split()[0] for _, text in body] == ["a-much-longer", "db", "web"]  # sorted by container
    assert [colour for colour, _ in body] == ["", "red", ""]
    starts = {header[1].index(column) for column in ("kind", "instance", "resets")}
    for _, text in body:  # every cell starts under its column's title
        cells = zip(text.split()[1:4], sorted(starts), strict=True)
        assert {text.index(cell, start) for cell, start in cells} == starts
    text = "\n".join(["-" * 20 + " lxdsnap " + "-" * 20, *(line for _, line in table)])
    parsed = summary(text)  # the suite's reader of the table reads what the report writes
    assert parsed["web"]["median"] == "1.50 s" and parsed["db"]["leftovers"] == "1"


def test_under_xdist_a_worker_sends_its_report_and_the_controller_prints_a_worker_column():
    gw0, gw1, controller = FakeConfig("gw0"), FakeConfig("gw1"), FakeConfig()
    gw0.stash[report.DURATIONS] = [(0.5, "t.py::a", "web")]
    assert report.finished(gw0, session_of(tracked("web", declared=True)), []) is False  # type: ignore[arg-type]
    assert report.finished(gw1, session_of(tracked("web", declared=True)),  # type: ignore[arg-type]
                           [Leftover("web", "instance lxdsnap-web-ab12cd34-1")]) is True
    assert gw1.workeroutput["lxdsnap"]["lines"] == [("red", "[gw1] LEFTOVER instance lxdsnap-web-ab12cd34-1")]
    for worker in (gw1, gw0):
        report.from_worker(controller, worker.workeroutput)  # type: ignore[arg-type]
    report.from_worker(controller, {})  # type: ignore[arg-type]  # a worker that had no marked test
    assert controller.stash[report.FAILED] is True
    assert controller.stash[report.DURATIONS] == [(0.5, "t.py::a", "web")]
    table = report.table(controller.stash[report.ROWS])
    assert table[0][1].split() == ["worker", *report.COLUMNS]
    assert [text.split()[:2] for _, text in table[1:]] == [["gw0", "web"], ["gw1", "web"]]
    assert [colour for colour, _ in table[1:]] == ["", "red"]


def test_a_session_with_problems_fails_the_run_even_without_containers():
    config = FakeConfig()
    assert report.finished(config, session_of(problems=["lease lost"]), []) is True  # type: ignore[arg-type]
    assert report.finished(FakeConfig(), session_of(notices=["n"]), []) is False  # type: ignore[arg-type]
    # (what it prints then is not pinned here: report.finished builds no lines without a tracked container)


def test_write_prints_the_table_then_the_lines_in_their_colours():
    config = FakeConfig()
    lxd = session_of(tracked("web", declared=True, resets=(0.1,), clone=1), problems=["p"], kept=["k"])
    report.finished(config, lxd, [Leftover("web", "snapshot web/x")])  # type: ignore[arg-type]
    terminal = FakeTerminal()
    report.write(terminal, config, 0)  # type: ignore[arg-type]
    assert terminal.lines[0][1].strip("- ") == "lxdsnap"
    assert [colour for colour, _ in terminal.lines[1:]] == ["", "red", "red", "red", "yellow"]
    assert [text for _, text in terminal.lines[3:]] == ["LEFTOVER snapshot web/x", "PROBLEM p", "KEPT k"]


@pytest.mark.parametrize("slowest", [0, 1, 3, 10])
def test_durations_lists_the_n_longest_waits_longest_first(slowest):
    config = FakeConfig()
    waits = [(0.25, "t.py::a", "web"), (2.0, "t.py::b", "web, db"), (0.5, "t.py::c", "db"), (1.0, "t.py::d", "web")]
    config.stash[report.DURATIONS] = waits
    terminal = FakeTerminal()
    report.write(terminal, config, slowest)  # type: ignore[arg-type]
    if not slowest:
        assert terminal.lines == []
        return
    title, *lines = [text for _, text in terminal.lines]
    assert f"slowest {slowest} lxd resets (time the test waited for clean containers)" in title
    assert lines == ["2.00s web, db: t.py::b", "1.00s web: t.py::d", "0.50s db: t.py::c",
                     "0.25s web: t.py::a"][:slowest]
