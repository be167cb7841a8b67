"""ZFS pools: never ask LXD for a restore it will refuse, or one that deletes newer snapshots (no pytest).

On a ZFS pool LXD (and Incus) restores an instance only to its most recent snapshot. The plugin's
baseline stops being the most recent as soon as anything else snapshots the instance: the user's
scheduled snapshots (``snapshots.schedule``), a ``--lxd-keep-failed`` snapshot, a second pytest-xdist
worker's baseline, or an ``lxc copy --instance-only`` of the instance. The functions here decide, from
what the REST API shows, whether a restore would be refused (or would delete snapshots), and word the
error the session raises instead of asking. They only read the records they are given.

What LXD does (read in canonical/lxd ``main`` and the ``lxd-5.0.9`` tag, lxc/incus ``main`` and
``stable-6.0``; OpenZFS ``main``):

* ``lxd/storage/drivers/driver_zfs_volumes.go``, ``(*zfs).restoreVolume`` (Incus:
  ``internal/server/storage/drivers/driver_zfs_volumes.go``, ``restoreVolume``, and from Incus 7.0
  ``CanRestoreVolume``) lists the instance dataset's ZFS snapshots with ``getDatasets`` (in
  ``driver_zfs_utils.go``: ``zfs get -H -r -o name -t snapshot name <dataset>``) and walks the entries
  after ``@snapshot-<name>``. ``zfs get`` sorts the snapshots of one dataset by their hidden
  ``createtxg`` property (OpenZFS ``cmd/zfs/zfs_iter.c``, ``zfs_compare``): creation order, not name
  order. After the restored snapshot:

  - any other ``@...`` entry (``@copy-<uuid>`` left by a clone copy, ``@deleted-<uuid>`` for a deleted
    snapshot that a clone still uses, a transient ``@migration-``/``@backup-`` one) makes it fail with
    ``Snapshot "<name>" cannot be restored due to subsequent internal snapshot(s) (from a copy)``,
    whatever the config says. These are invisible in the REST API: see :func:`refusal_kind`.
  - ``@snapshot-<other>`` entries (LXD snapshots) make it fail with ``Snapshot "<name>" cannot be
    restored due to subsequent snapshot(s). Set zfs.remove_snapshots to override`` unless
    ``vol.ExpandedConfig("zfs.remove_snapshots")`` is true: the instance volume's ``zfs.remove_snapshots``,
    else the pool's ``volume.zfs.remove_snapshots`` (``lxd/storage/drivers/volume.go``,
    ``ExpandedConfig``; a root disk device only seeds it at creation through ``initial.*``). With it
    set, ``RestoreInstanceSnapshot`` in ``lxd/storage/backend_lxd.go`` (Incus: ``backend.go``) catches
    ``ErrDeleteSnapshots`` and **deletes every newer LXD snapshot**, then restores. LXD ``main`` first
    refuses when one of them has clones (``... having N dependent clone(s) which prevents deletion``);
    LXD 5.0 and Incus (6.0 and ``main``) do not check: they delete (``DeleteVolumeSnapshot`` renames a
    snapshot with clones to ``@deleted-<uuid>``), retry, and then refuse as "internal".

* Refused is not untouched: ``(*common).restoreCommon`` (LXD ``main``) stops a running instance and
  writes the snapshot's config into the instance before the storage refuses; LXD 5.0 and Incus 6.0
  (``(*lxc).Restore``) stop it first. Only Incus 7.0+ asks ``CanRestoreInstanceSnapshot`` before
  stopping. Hence: check before asking.

* "Newer" as the API can see it: ``created_at``. ``GET /1.0/instances/<n>/snapshots?recursion=1`` lists
  snapshots sorted by creation date, then by database id (``(*common).Snapshots`` in
  ``lxd/instance/drivers/driver_common.go``; ``GetInstanceSnapshotsNames`` in ``lxd/db/instances.go``:
  ``ORDER BY creation_date, id``). LXD records the date when it creates the ZFS snapshot, and copies,
  migrations and backups recreate snapshots oldest first, so this order is the ZFS order; equal
  timestamps keep the API's (id) order. A snapshot without a creation time counts as newer.

* Expiry changes nothing until the snapshot is gone: an expired snapshot is an ordinary dataset until
  the daemon's once-a-minute task (``pruneExpiredAndAutoCreateInstanceSnapshotsTask`` in
  ``lxd/instance.go``) deletes it; the same task takes ``snapshots.schedule`` snapshots (of running
  instances only, unless ``snapshots.schedule.stopped`` is true).

* Copies (``CreateVolumeFromCopy`` in ``driver_zfs_volumes.go``): copying an *instance* takes
  ``@copy-<uuid>`` on it. With ``zfs.clone_copy`` unset or true (the pool default) and no snapshots
  copied (``instance_only``, or a source without snapshots) the new instance is a ZFS clone of it and
  the snapshot stays until that copy is deleted: every older snapshot of the source becomes
  unrestorable. A full copy (``zfs.clone_copy=false``, LXD ``main`` also ``rebase``; or copying the
  snapshots too) destroys it when done. Copying *from a snapshot* (``source: c/snap``) clones
  ``@snapshot-snap`` itself: restoring to that snapshot still works (``zfs rollback`` to the latest
  snapshot ignores its clones); deleting it leaves ``@deleted-<uuid>`` until the clone goes.

The documented short version is ``doc/reference/storage_zfs.md`` ("Restoring from older snapshots").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.safety.ownership import is_kept_snapshot_name, is_plugin_snapshot_name

ZFS = "zfs"
"""The storage driver name ``GET /1.0/storage-pools/<pool>`` reports."""

PRUNE_INTERVAL = 60.0
"""Seconds between the daemon's runs of its expired-snapshot pruning task."""

RefusalKind = Literal["newer", "internal", "clones"]

_REFUSALS: tuple[tuple[RefusalKind, re.Pattern[str]], ...] = (
    ("internal", re.compile(r"cannot be restored due to subsequent internal snapshot")),
    ("clones", re.compile(r"cannot be restored due to snapshot \".*\" having \d+ dependent clone")),
    ("newer", re.compile(r"cannot be restored due to subsequent snapshot\(s\)")),
)

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:\d{2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FALSE = ("false", "no", "off", "0")  # LXD's shared.IsFalse (lower-cased)

Snapshot = Mapping[str, Any]
"""One snapshot record as ``GET /1.0/instances/<name>/snapshots?recursion=1`` returns it."""


# -- reading the records -------------------------------------------------------------------------
def timestamp_ns(value: object) -> int | None:
    """An API timestamp (RFC 3339, up to nanoseconds) as integer nanoseconds since the epoch; None for
    a missing or unreadable value and for Go's zero time (``0001-01-01T00:00:00Z``: "never")."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    if day == "0001-01-01":
        return None
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    except ValueError:
        return None
    return (moment - _EPOCH) // timedelta(seconds=1) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def is_expired(snapshot: Snapshot, now: float) -> bool:
    """Whether ``expires_at`` has passed at ``now`` (epoch seconds). The snapshot still exists, and still
    blocks, until the daemon prunes it (within about :data:`PRUNE_INTERVAL`)."""
    expires = timestamp_ns(snapshot.get("expires_at"))
    return expires is not None and expires <= int(now * 1_000_000_000)


def creation_order(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """The records oldest first, as LXD orders them (creation date, then its list order); records
    without a creation time last. Pass the list in the order the API returned it."""
    late = 1 << 62
    ranked = sorted(enumerate(snapshots), key=lambda item: (timestamp_ns(item[1].get("created_at")) or late, item[0]))
    return [record for _, record in ranked]


# -- restoring ---------------------------------------------------------------------------------------
def restore_blockers(snapshots: Sequence[Snapshot], baseline: str) -> list[str]:
    """The snapshots newer than ``baseline`` (oldest first): on a ZFS pool each one makes LXD refuse the
    restore, or delete them all with ``zfs.remove_snapshots``. Empty: the restore is safe as far as the
    API can tell (a ``@copy-`` snapshot is invisible: see :func:`refusal_kind`). ``LookupError`` when
    ``baseline`` is not among ``snapshots``.

    A snapshot without a creation time, or every other one when the baseline has none, counts as newer.
    """
    names = [str(s.get("name", "")) for s in snapshots]
    if baseline not in names:
        raise LookupError(f"snapshot {baseline!r} does not exist (expired, or deleted by someone)")
    base = snapshots[names.index(baseline)]
    if timestamp_ns(base.get("created_at")) is None:
        return [n for n in names if n != baseline]
    ordered = [str(s.get("name", "")) for s in creation_order(snapshots)]
    return ordered[ordered.index(baseline) + 1:]


def remove_snapshots_enabled(volume_config: Mapping[str, str], pool_config: Mapping[str, str]) -> bool:
    """Whether LXD would delete newer snapshots on restore instead of refusing: the instance volume's
    ``zfs.remove_snapshots`` when set (even empty), else the pool's ``volume.zfs.remove_snapshots``."""
    if "zfs.remove_snapshots" in volume_config:
        value = volume_config["zfs.remove_snapshots"]
    else:
        value = pool_config.get("volume.zfs.remove_snapshots", "")
    return value != "" and value.lower() not in _FALSE


def refusal_kind(error: str) -> RefusalKind | None:
    """Which ZFS refusal an LXD/Incus error text is: ``"newer"`` (newer LXD snapshots), ``"internal"``
    (a ``@copy-``/``@deleted-`` ZFS snapshot the API does not list), ``"clones"`` (LXD ``main``: a newer
    snapshot that ``zfs.remove_snapshots`` would delete has clones); None for any other error."""
    for kind, pattern in _REFUSALS:
        if pattern.search(error):
            return kind
    return None


# -- taking snapshots and copies ---------------------------------------------------------------------
def newer_snapshots_block_restore(driver: str) -> bool:
    """Whether any snapshot taken after a baseline makes that baseline unrestorable (ZFS only)."""
    return driver == ZFS


def snapshot_allowed(driver: str, snapshots: Sequence[Snapshot], must_stay_restorable: Iterable[str]) -> bool:
    """May the plugin snapshot this instance while each snapshot named in ``must_stay_restorable`` (a
    baseline: its own, another worker's) must still be restorable afterwards? Never on ZFS while one of
    them exists: a ``--lxd-keep-failed`` snapshot or a second worker's baseline must take another route."""
    if not newer_snapshots_block_restore(driver):
        return True
    present = {str(s.get("name", "")) for s in snapshots}
    return not any(name in present for name in must_stay_restorable)


def baselines(snapshots: Sequence[Snapshot]) -> list[str]:
    """The plugin baselines among ``snapshots`` (``lxdsnap-<token>-base``, ``lxdsnap-reuse-base``),
    whichever session took them, oldest first."""
    return [str(s["name"]) for s in creation_order(snapshots)
            if is_plugin_snapshot_name(str(s.get("name", ""))) and str(s["name"]).endswith("-base")]


def copy_leaves_snapshot(driver: str, pool_config: Mapping[str, str], *, copies_snapshots: bool) -> bool:
    """Whether copying an instance (not one of its snapshots) within this pool leaves a ``@copy-`` ZFS
    snapshot on the source for as long as the copy exists. ``copies_snapshots``: the copy takes the
    source's snapshots along (not ``instance_only``, and the source has some). ``rebase`` counts as
    leaving one: LXD ``main`` copies in full then, LXD 5.0 and Incus 6.0 clone."""
    if driver != ZFS or copies_snapshots:
        return False
    return pool_config.get("zfs.clone_copy", "").lower() not in _FALSE


def scheduled_snapshots(expanded_config: Mapping[str, str]) -> str | None:
    """The instance's ``snapshots.schedule`` when the daemon may snapshot it on its own during a
    session (it skips stopped instances unless ``snapshots.schedule.stopped`` is true), else None."""
    return expanded_config.get("snapshots.schedule") or None


# -- messages -----------------------------------------------------------------------------------------
def _role(name: str, record: Snapshot | None, now: float) -> str:
    if is_kept_snapshot_name(name):
        role = "a failed test's state kept by --lxd-keep-failed"
    elif is_plugin_snapshot_name(name) and name.endswith("-base"):
        role = "another lxdsnap session's or xdist worker's baseline"
    elif is_plugin_snapshot_name(name):
        role = "an lxdsnap snapshot"
    else:
        role = "not made by lxdsnap"
    if record is not None and is_expired(record, now):
        role += f"; it has expired and LXD deletes it within about {PRUNE_INTERVAL:.0f} s"
    return role


def refusal_message(container: str, instance: str, baseline: str, blockers: Sequence[str], pool: str,
                    commands: Commands, *, snapshots: Sequence[Snapshot] = (), remove_snapshots: bool = False,
                    declared: bool = False, now: float | None = None) -> str:
    """Why the plugin did not reset ``container`` to ``baseline`` on a ZFS pool, and what to do.
    ``snapshots`` (the API records) lets it tell expired snapshots; ``remove_snapshots`` says LXD
    would have deleted the blockers rather than refused; ``declared``: the plugin launched the instance."""
    now = datetime.now(UTC).timestamp() if now is None else now
    records = {str(s.get("name", "")): s for s in snapshots}
    listed = "\n".join(f"  - {instance}/{name} ({_role(name, records.get(name), now)})" for name in blockers)
    effect = ("with zfs.remove_snapshots set, LXD would delete them all" if remove_snapshots
              else "LXD refuses such a restore")
    own = [n for n in blockers if is_plugin_snapshot_name(n)]
    theirs = [n for n in blockers if not is_plugin_snapshot_name(n)]
    expired = [n for n in blockers if n in records and is_expired(records[n], now)]
    steps = []
    if expired and len(expired) == len(blockers):
        steps.append("run the tests again in a minute or two, once LXD has deleted the expired snapshot(s)")
    if theirs:
        steps.append(f"take no snapshots of {instance} while tests run: pause its schedule, if it has one "
                     f"(`{commands(f'config get {instance} snapshots.schedule')}`), for the time of the run")
    if declared:
        steps.append("declare it on a btrfs, lvm or dir pool (`pool = \"<name>\"`; "
                     f"`{commands('storage list')}`), where older snapshots restore")
    else:
        steps.append("declare the container in pyproject.toml instead: the plugin then launches and snapshots "
                     f"an instance of its own and leaves {instance} alone")
        steps.append("or run the tests on a container in a btrfs, lvm or dir pool, where older snapshots restore "
                     f"(`{commands('storage list')}`; a copy there: "
                     f"`{commands(f'copy {instance} {instance}-tests --instance-only --storage <pool>')}`)")
    for name in own:
        steps.append(f"{instance}/{name} is lxdsnap's own; delete it if you no longer need it: "
                     f"`{commands.delete_snapshot(instance, name)}`")
    for name in theirs:
        steps.append(f"only if you no longer need your snapshot {instance}/{name}: keep its content as an "
                     f"image first (`{commands(f'publish {instance}/{name} --alias {instance}-{name}')}`), then "
                     f"`{commands.delete_snapshot(instance, name)}`. Copying it to a new instance on this pool does "
                     "not help: the copy is a ZFS clone of it, which keeps it (hidden) and the restore refused")
    return (
        f"not resetting container {container!r} (instance {instance}) to {baseline}: on ZFS pool {pool!r} LXD "
        f"restores only the most recent snapshot, and newer ones exist ({effect}):\n{listed}\n"
        f"Nothing was changed: the container is as the test left it and every snapshot is still there; its "
        f"baseline is kept for recovery.\nWhat you can do:\n" + "\n".join(f"  - {s}" for s in steps)
    )


def internal_refusal_message(container: str, instance: str, baseline: str, pool: str, commands: Commands,
                             error: str) -> str:
    """The message for LXD's refusal because of a ZFS snapshot the API does not list (``@copy-``: an
    ``--instance-only`` copy of the instance, ``@deleted-``: a deleted snapshot a copy still uses).
    LXD may already have stopped the instance and put the baseline's config back before refusing."""
    return (
        f"resetting container {container!r} (instance {instance}) to {baseline} was refused by LXD: {error}\n"
        f"On ZFS pool {pool!r} an instance copied from {instance} (`{commands('copy')} --instance-only`, or a "
        f"copy of a snapshot of it that was deleted since) is a ZFS clone that keeps a snapshot on {instance}; "
        f"it is newer than {baseline}, and the API does not list it. The files of {instance} were not changed, "
        f"but LXD stopped it (and may have restored the baseline's config) before refusing. Delete that copy "
        f"(`{commands('list')}`), or copy with its snapshots or to another pool "
        f"(`{commands(f'copy {instance} <name> --storage <pool>')}`); then restore by hand: "
        f"`{commands.restore(instance, baseline)}`"
    )


def snapshot_refusal_message(container: str, instance: str, pool: str, commands: Commands, *,
                             purpose: Literal["keep-failed", "baseline"], blocking: Sequence[str]) -> str:
    """Why the plugin did not snapshot ``instance``: on ZFS the new snapshot would make each baseline in
    ``blocking`` unrestorable. ``purpose``: a ``--lxd-keep-failed`` state, or a second baseline (another
    pytest-xdist worker, or a second session on the same container)."""
    names = ", ".join(f"{instance}/{b}" for b in blocking)
    if purpose == "keep-failed":
        return (f"did not keep the state of {container!r} as a snapshot: on ZFS pool {pool!r} a snapshot newer "
                f"than the baseline ({names}) would make LXD refuse every later reset of {instance}. Nothing "
                "was changed. To keep failed states of this container, declare it in pyproject.toml (a "
                "failed test's clone is kept instead) or move it to a btrfs, lvm or dir pool")
    return (f"not taking a second baseline of container {container!r} (instance {instance}): on ZFS pool "
            f"{pool!r} it would make LXD refuse every reset to the existing one ({names}). Nothing was changed. "
            f"Run the tests that use {container!r} in one process (`-p no:xdist`, or `-n 0`), declare the "
            f"container in pyproject.toml (each worker then launches its own), or move {instance} to a btrfs, "
            f"lvm or dir pool (`{commands('storage list')}`)")
