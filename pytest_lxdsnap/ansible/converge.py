"""A declared container's ``playbook``: converge it once, before its baseline snapshot (no pytest here), and the
digest of what the play is made of, which keys a kept build (``--lxd-reuse``)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from pytest_lxdsnap.ansible.inventory import Target, write_inventory
from pytest_lxdsnap.ansible.runner import run_playbook
from pytest_lxdsnap.errors import PlaybookError, ProvisionError

CONTENT_DIRS = ("roles", "group_vars", "host_vars", "tasks", "handlers", "templates", "files", "vars", "defaults",
                "library", "module_utils", "filter_plugins", "collections")
"""Folders beside the playbook that a play reads (Ansible's playbook-adjacent names): their files key the build."""


def content_digest(playbook: str) -> str:
    """SHA-256 over the playbook and every file under the :data:`CONTENT_DIRS` beside it (paths and bytes), so a
    change to a task, template or role variable builds anew, and a change to a test file does not."""
    top = Path(playbook).parent
    files = [Path(playbook)]
    for folder in CONTENT_DIRS:
        files += sorted(p for p in (top / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
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
