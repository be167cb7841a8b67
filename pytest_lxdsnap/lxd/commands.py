"""The command lines the plugin prints for people to run: ``lxc`` for LXD, ``incus`` for Incus (no pytest).

Most read the same with either tool; snapshot restore and delete moved under ``incus snapshot``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Commands:
    incus: bool = False

    @property
    def tool(self) -> str:
        return "incus" if self.incus else "lxc"

    def __call__(self, rest: str) -> str:
        """A command whose syntax both tools share (exec, start, copy, info, delete --force, storage, ...)."""
        return f"{self.tool} {rest}"

    def restore(self, instance: str, snapshot: str) -> str:
        return f"incus snapshot restore {instance} {snapshot}" if self.incus else f"lxc restore {instance} {snapshot}"

    def delete_snapshot(self, instance: str, snapshot: str) -> str:
        return f"incus snapshot delete {instance} {snapshot}" if self.incus else f"lxc delete {instance}/{snapshot}"

    def snapshot(self, instance: str, snapshot: str) -> str:
        return f"incus snapshot create {instance} {snapshot}" if self.incus else f"lxc snapshot {instance} {snapshot}"
