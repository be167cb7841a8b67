"""Ansible callback plugin ``lxdsnap_counts``: beside the usual screen output, writes what the play did as JSON to
the file in ``$LXDSNAP_ANSIBLE_RESULTS``: per host the counts of ``ansible-playbook``'s recap, and the tasks that
changed, failed or could not reach it (read by :mod:`pytest_lxdsnap.ansible.runner`; no text is parsed)."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: lxdsnap_counts
    type: aggregate
    short_description: per-host counts and changed tasks as JSON, for pytest-lxdsnap
    description:
        - Writes the play's recap and the names of changed and failed tasks to $LXDSNAP_ANSIBLE_RESULTS.
    requirements:
        - enabled in callbacks_enabled
"""

RESULTS_VARIABLE = "LXDSNAP_ANSIBLE_RESULTS"
COUNTS = ("ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored")


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible-core ships no type information
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lxdsnap_counts"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks: dict[str, dict[str, list[str]]] = {"changed": {}, "failed": {}, "unreachable": {}}
        self.messages: dict[str, list[str]] = {}
        self.plays: list[str] = []

    def _note(self, kind: str, result: Any) -> None:
        host = result._host.get_name()
        self.tasks[kind].setdefault(host, []).append(result._task.get_name())
        if kind != "changed":
            message = result._result.get("msg") or result._result.get("stderr") or ""
            self.messages.setdefault(host, []).append(f"{result._task.get_name()}: {message}".strip())

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.plays.append(play.get_name())

    def v2_runner_on_ok(self, result: Any) -> None:
        if result._result.get("changed"):
            self._note("changed", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._note("failed", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._note("unreachable", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        path = os.environ.get(RESULTS_VARIABLE)
        if not path:
            return
        hosts = sorted(stats.processed)
        summary = {host: stats.summarize(host) for host in hosts}
        counts = {key: {host: int(summary[host].get(key, 0)) for host in hosts} for key in COUNTS}
        with open(path, "w") as fh:
            json.dump({"counts": counts, "tasks": self.tasks, "messages": self.messages, "plays": self.plays}, fh)
