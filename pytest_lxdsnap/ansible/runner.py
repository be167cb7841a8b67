"""Running ``ansible-playbook`` against containers, and what it did (no pytest here).

The run gets the ``lxdsnap`` connection plugin and the ``lxdsnap_counts`` callback from this package's folders
(:func:`ansible_env`); the counts come from that callback's JSON, never from parsing Ansible's text. Every
failure raises :class:`~pytest_lxdsnap.errors.PlaybookError` with one message that says where (the test, the
containers), what went wrong, and Ansible's output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lxdsnap.errors import MissingExtra, NotIdempotent, PlaybookError

HERE = Path(__file__).resolve().parent
CONNECTION_PLUGINS = HERE / "connection"
CALLBACK_PLUGINS = HERE / "callback"
CALLBACK = "lxdsnap_counts"
RESULTS_VARIABLE = "LXDSNAP_ANSIBLE_RESULTS"  # as in callback/lxdsnap_counts.py, which Ansible loads on its own
EXTRA_HINT = "pip install 'pytest-lxdsnap[ansible]'"
OUTPUT_SHOWN = 6000  # characters of Ansible's output a failure shows (its end)


@dataclass(frozen=True)
class PlaybookResult:
    """What ``ansible-playbook`` did: its exit code, its output, and per host (the marker's names) the recap's
    counts and the names of the tasks that changed or failed."""

    playbook: Path
    rc: int
    stdout: str
    ok: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    unreachable: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    changed_tasks: dict[str, list[str]] = field(default_factory=dict)
    failed_tasks: dict[str, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"PlaybookResult(playbook={str(self.playbook)!r}, rc={self.rc}, ok={self.ok}, changed={self.changed}, "
                f"failed={self.failed})")


def require_ansible(what: str) -> None:
    """MissingExtra naming ``what`` (the caller, the container, the test) when ansible-core is not installed."""
    if importlib.util.find_spec("ansible") is None:
        raise MissingExtra(f"{what} needs Ansible (ansible-core), which is not installed: {EXTRA_HINT}")


def _joined(variable: str, first: Path | str) -> str:
    """``first`` ahead of what the environment already has in a colon-separated Ansible setting."""
    existing = os.environ.get(variable)
    return f"{first}{os.pathsep}{existing}" if existing else str(first)


def ansible_env(local_temp: Path | None = None) -> dict[str, str]:
    """The environment variables Ansible needs to reach containers through an inventory of ours: the connection
    plugin's and callback's folders, pipelining, no retry files, no colour; ``local_temp`` for its files on this
    host (removed with it). For users who run Ansible themselves: ``{**os.environ, **ansible_env()}``."""
    env = {
        "ANSIBLE_CONNECTION_PLUGINS": _joined("ANSIBLE_CONNECTION_PLUGINS", CONNECTION_PLUGINS),
        "ANSIBLE_CALLBACK_PLUGINS": _joined("ANSIBLE_CALLBACK_PLUGINS", CALLBACK_PLUGINS),
        "ANSIBLE_CALLBACKS_ENABLED": _joined("ANSIBLE_CALLBACKS_ENABLED", CALLBACK).replace(os.pathsep, ","),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    if local_temp is not None:
        env["ANSIBLE_LOCAL_TEMP"] = str(local_temp)
    if "utf" not in (os.environ.get("LC_ALL") or os.environ.get("LANG") or "").lower().replace("-", ""):
        env["LC_ALL"] = "C.UTF-8"  # ansible-core refuses to start under a locale that is not UTF-8
    return env


def check_playbook(playbook: Path, where: str) -> None:
    """The playbook is a readable file; PlaybookError saying so before anything runs."""
    if not playbook.is_file():
        raise PlaybookError(f"{where}: the playbook {playbook} does not exist (relative paths start at the "
                            "project's root, the folder of pyproject.toml): fix the path")


def _patterns(limit: str | Sequence[str]) -> list[str]:
    text = limit if isinstance(limit, str) else ",".join(limit)
    return [p for p in re.split(r"[,:]", text) if p]


def check_limit(limit: str | Sequence[str] | None, hosts: Sequence[str], where: str) -> str | None:
    """``limit`` as ``--limit`` takes it; PlaybookError when it names a container the test did not declare."""
    if limit is None:
        return None
    patterns = _patterns(limit)
    for pattern in patterns:
        name = pattern.lstrip("!&")
        if name in ("all", "lxdsnap") or any(c in name for c in "*?[~") or name in hosts:
            continue
        declared = ", ".join(f'"{h}"' for h in hosts)
        raise PlaybookError(f"{where}: limit names container {name!r}, which the test does not declare (declared: "
                            f"{declared}); add it to the marker: @pytest.mark.lxd({declared}, \"{name}\")")
    return ",".join(patterns)


def run_playbook(playbook: Path, inventory: Path, workdir: Path, *, where: str, instances: Mapping[str, str],
                 extra_vars: Mapping[str, Any] | None = None, limit: str | Sequence[str] | None = None,
                 check: bool = False) -> PlaybookResult:
    """Run ``playbook`` against ``inventory`` (hosts: the keys of ``instances``, the marker's names, each mapped
    to its LXD instance for messages), from the playbook's folder (its ansible.cfg applies); ``workdir`` holds
    the run's files. PlaybookError when the play does not run or fails, with Ansible's output."""
    require_ansible(where)
    check_playbook(playbook, where)
    limited = check_limit(limit, list(instances), where)
    results = workdir / "results.json"
    results.unlink(missing_ok=True)
    command = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(inventory), str(playbook)]
    if extra_vars:
        command += ["--extra-vars", json.dumps(dict(extra_vars))]
    if limited:
        command += ["--limit", limited]
    if check:
        command.append("--check")
    local_temp = workdir / "tmp"
    local_temp.mkdir(exist_ok=True)
    env = {**os.environ, **ansible_env(local_temp), RESULTS_VARIABLE: str(results)}
    done = subprocess.run(command, cwd=playbook.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", check=False)
    data = json.loads(results.read_text()) if results.exists() else None
    result = _result(playbook, done.returncode, done.stdout, data)
    problem = _problem(result, data, instances)
    if problem:
        output = done.stdout[-OUTPUT_SHOWN:]
        raise PlaybookError(f"{where}: {problem}\n--- ansible-playbook {playbook.name} (exit {done.returncode}) ---\n"
                            f"{output}", result)
    return result


def _result(playbook: Path, rc: int, stdout: str, data: dict[str, Any] | None) -> PlaybookResult:
    if data is None:
        return PlaybookResult(playbook, rc, stdout)
    counts, tasks = data["counts"], data["tasks"]
    return PlaybookResult(playbook, rc, stdout, ok=counts["ok"], changed=counts["changed"], failed=counts["failures"],
                          unreachable=counts["unreachable"], skipped=counts["skipped"], changed_tasks=tasks["changed"],
                          failed_tasks=tasks["failed"])


def _problem(result: PlaybookResult, data: dict[str, Any] | None, instances: Mapping[str, str]) -> str | None:
    """What went wrong, in one sentence naming the containers (None: the play ran and passed)."""
    def container(host: str) -> str:
        return f"container {host!r} (instance {instances.get(host, '?')})"

    if data is None:
        return (f"ansible-playbook could not run {result.playbook} (exit {result.rc}): a syntax error, a role or "
                "file it cannot find, or a bad option; Ansible's ERROR below says which: fix the playbook")
    unreachable = [h for h, n in result.unreachable.items() if n]
    if unreachable:
        why = "; ".join(m for h in unreachable for m in data["messages"].get(h, []))
        return (f"Ansible could not reach {', '.join(container(h) for h in unreachable)}: {why}. Is it running? A "
                "test that stops a container must start it again before a play")
    if result.failed_tasks:
        lines = [f"task {m}" for h in result.failed_tasks for m in data["messages"].get(h, [])]
        hosts = ", ".join(container(h) for h in result.failed_tasks)
        return f"the play failed on {hosts}:\n  " + "\n  ".join(lines)
    if result.rc != 0:
        return f"ansible-playbook exited {result.rc}"
    if not result.ok and not result.skipped and not result.changed:
        names = ", ".join(f'"{h}"' for h in instances)
        return (f"the play ran on none of the test's containers ({names}): its hosts: must name them, the group "
                "\"lxdsnap\" or \"all\"")
    return None


def check_idempotent(result: PlaybookResult, where: str) -> PlaybookResult:
    """NotIdempotent naming each task that changed (per container) unless none did; ``result`` otherwise."""
    if not any(result.changed.values()):
        return result
    lines = [f"{host}: {task}" for host, tasks in result.changed_tasks.items() for task in tasks]
    raise NotIdempotent(f"{where}: {result.playbook.name} is not idempotent: run again on a converged container, "
                        f"{len(lines)} task(s) changed something:\n  " + "\n  ".join(lines)
                        + "\nMake each task report changed only when it changes something (creates=, changed_when:, "
                        "a module instead of command:)")
