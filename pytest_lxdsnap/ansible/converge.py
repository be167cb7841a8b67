"""A declared container's ``playbook``: converge it once, before its baseline snapshot (no pytest here), and the
digest of what the play is made of, which keys a kept build (``--lxd-reuse``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from pytest_lxdsnap.ansible.inventory import Target, write_inventory
from pytest_lxdsnap.ansible.runner import run_playbook
from pytest_lxdsnap.errors import PlaybookError, ProvisionError

CONTENT_DIRS = ("roles", "group_vars", "host_vars", "tasks", "handlers", "templates", "files", "vars", "defaults",
                "library", "module_utils", "filter_plugins", "collections")
"""Folders beside the playbook that a play reads (Ansible's playbook-adjacent names): their files key the build."""
CONTENT_SUFFIXES = (".yml", ".yaml", ".json", ".j2", ".cfg", ".ini")
"""Files beside the playbook that a play may read (vars_files, include_tasks, ansible.cfg ...): they key it too."""


def content_digest(playbook: str) -> str:
    """SHA-256 over the playbook, the files beside it ending in :data:`CONTENT_SUFFIXES`, and every file under the
    :data:`CONTENT_DIRS` beside it, symlinks followed (paths and bytes), so a change to a task, template, vars
    file or role builds anew, and a change to a test file does not."""
    top = Path(playbook).parent
    files = {Path(playbook)} | {p for p in top.iterdir() if p.is_file() and p.suffix in CONTENT_SUFFIXES}
    for folder in CONTENT_DIRS:
        for root, dirs, names in os.walk(top / folder, followlinks=True):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            files.update(Path(root, name) for name in names)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def converge(target: Target, playbook: str, table: str) -> None:
    """Run ``playbook`` against the container ``target`` once; ProvisionError with Ansible's output when it fails
    (``table``: where the key is declared)."""
    where = f"provisioning declared container {target.name!r} (instance {target.instance}) with its playbook"
    workdir = Path(tempfile.mkdtemp(prefix="lxdsnap-ansible-"))
    try:
        inventory = write_inventory([target], workdir / "inventory.yml")
        run_playbook(Path(playbook), inventory, workdir, where=where, instances={target.name: target.instance})
    except PlaybookError as exc:
        raise ProvisionError(f"{exc}\nFix the playbook, or `playbook` in {table}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
