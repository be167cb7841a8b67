"""The ``lxdsnap`` command: ``setup`` (and ``--undo``), ``doctor``, ``gc`` and ``publish`` (the same LXD modules the
plugin uses)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host.hostsetup import IMAGES, doctor, setup
from pytest_lxdsnap.host.setupchanges import STATE_FILE
from pytest_lxdsnap.host.setupundo import undo
from pytest_lxdsnap.lxd.backends import INCUS, LXD, Backend
from pytest_lxdsnap.lxd.connection import Endpoint, insecure_warning, trusted_on_first_use


def build_parser() -> argparse.ArgumentParser:
    """The ``lxdsnap`` command line (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(prog="lxdsnap", description="Prepare and check a host for pytest-lxdsnap")
    parser.add_argument("--endpoint", help="Unix socket path or https:// URL of LXD (default: the local socket)")
    parser.add_argument("--project", help="LXD project (default: LXD's default project)")
    parser.add_argument("--cert", help="client certificate (PEM) for an https:// endpoint")
    parser.add_argument("--key", help="private key of --cert")
    parser.add_argument("--server-cert", help="pin the https:// endpoint's certificate (PEM)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the https:// endpoint (a warning)")
    incus = argparse.ArgumentParser(add_help=False)
    incus.add_argument("--incus", action="store_true",
                       help=f"Incus instead of LXD (socket {INCUS.socket}; Debian 12 installs it from backports)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", parents=[incus],
                             help="Install and start LXD (or Incus) unless one runs, create a pool, import the test "
                             "image; records each change for --undo")
    p_setup.add_argument("--pool-driver", choices=["auto", "btrfs", "dir"], default="auto",
                         help="Driver of the pool created when none exists (auto: btrfs where the kernel has it)")
    fast = p_setup.add_mutually_exclusive_group()
    fast.add_argument("--fast-stop", dest="fast_stop", action="store_true", default=None,
                      help="Make lxcfs's 0.5 s post-stop pause run on container reboots only (dpkg-divert); "
                           "in-place resets get ~3x faster")
    fast.add_argument("--undo-fast-stop", dest="fast_stop", action="store_false",
                      help="Put lxcfs's own post-stop hook back (also repairs a half-done --fast-stop)")
    fast.add_argument("--undo", action="store_true",
                      help="Reverse what earlier setup runs recorded (with --incus: the Incus side), newest first; "
                           "anything changed since or still in use is left, with the reason")
    p_setup.add_argument("--image", dest="images", action="append", default=[], metavar="NAME",
                         choices=sorted(IMAGES),
                         help="Also make this image (repeatable): debian builds lxdsnap/debian-12 (Debian 12 minbase + "
                              "systemd + python3) from the host's Debian mirror, about 90 s, once per machine")
    p_setup.add_argument("--package-cache", action="store_true",
                         help="Install and start apt-cacher-ng on 127.0.0.1:3142, for package_cache = true in "
                              "declarations (containers install real packages without a network)")
    p_setup.add_argument("--state-file", type=Path, default=STATE_FILE,
                         help=f"Where setup records its changes for --undo (default {STATE_FILE})")
    sub.add_parser("doctor", parents=[incus], help="Report what is present, what is missing, and the fix for each")
    p_gc = sub.add_parser("gc", parents=[incus], help="Restore and remove what dead lxdsnap sessions left "
                          "(instances, snapshots, tags, kept states past their expiry); live sessions stay untouched")
    p_gc.add_argument("--dry-run", action="store_true", help="Only list what would be done")
    p_gc.add_argument("--foreign", action="store_true",
                      help="Also clean copies the user made of lxdsnap's instances (`lxc copy`): remove the lxdsnap "
                           "keys and snapshots they carry (never the copies themselves)")
    p_cluster = sub.add_parser("cluster", parents=[incus], help="A real cluster of N member daemons on loopback, "
                               "beside the host's daemon (never touching it): `up N` (idempotent) or `down`")
    p_cluster.add_argument("action", choices=["up", "down"], help="up: start (or complete) it; down: remove it all")
    p_cluster.add_argument("members", nargs="?", type=int, default=2, help="Members for `up` (default 2)")
    p_cluster.add_argument("--image", dest="images", action="append", default=[], choices=["debian"],
                           help="Also import lxdsnap/debian-12 (its tarball from `lxdsnap setup --image debian`)")
    p_pub = sub.add_parser("publish", help="Publish the baseline of a declared container kept by --lxd-reuse as a "
                           "local image (other hosts or CI caches can start from it)")
    p_pub.add_argument("name", help="the declared container's name ([tool.lxdsnap.containers.<name>])")
    p_pub.add_argument("--alias", help="image alias (default: lxdsnap/<name>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backend = INCUS if getattr(args, "incus", False) else LXD
    # setup looks for a running daemon itself; the other commands talk to Incus at its socket
    url = args.endpoint or (INCUS.socket if backend is INCUS and args.command != "setup" else None)
    endpoint = Endpoint(url=url, project=args.project, cert=args.cert, key=args.key,
                        server_cert=args.server_cert, insecure=args.insecure)
    try:
        if args.insecure:  # trust on first use, once: every request is held to the fingerprint shown
            endpoint = trusted_on_first_use(endpoint)
            print(f"lxdsnap: WARNING {insecure_warning(endpoint, endpoint.fingerprint)}", file=sys.stderr)
        if args.command == "setup":
            log = lambda line: print(f"lxdsnap setup: {line}", flush=True)  # noqa: E731
            if args.undo:
                return 0 if undo(backend, args.state_file, log) else 1
            setup(endpoint, log=log, pool_driver=args.pool_driver, fast_stop=args.fast_stop, backend=backend,
                  state_file=args.state_file, images=tuple(args.images), package_cache=args.package_cache)
            return 0
        if args.command == "cluster":
            return run_cluster(args.action, args.members, backend, tuple(args.images))
        if args.command == "gc":
            return collect_garbage(endpoint, dry_run=args.dry_run, foreign=args.foreign)
        if args.command == "publish":
            from pytest_lxdsnap.session.reuse import publish

            fingerprint, alias = publish(endpoint, args.name, args.alias)
            print(f"lxdsnap publish: image {fingerprint[:12]} as {alias}; use it with image = \"{alias}\"")
            return 0
        checks = doctor(endpoint, backend)
    except LxdSnapError as exc:
        print(f"lxdsnap {args.command}: {exc}", file=sys.stderr)
        return 1
    width = max(len(c.what) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else "TIP " if c.advisory else "FIX "
        fix = f"  -> {c.fix}" if not c.ok and c.fix else ""
        print(f"{mark}{c.what:<{width}}  {c.detail}{fix}")
    return 0 if all(c.ok or c.advisory for c in checks) else 1


def run_cluster(action: str, count: int, backend: Backend, images: tuple[str, ...] = ()) -> int:
    """``lxdsnap cluster up N`` / ``down``: the loopback cluster of :mod:`pytest_lxdsnap.host.cluster`."""
    from pytest_lxdsnap.host import cluster
    from pytest_lxdsnap.host.debian import DEBIAN_ALIAS, tarball_path

    log = lambda line: print(f"lxdsnap cluster: {line}", flush=True)  # noqa: E731
    if action == "down":
        cluster.down(log, backend=backend)
        return 0
    tarballs = cluster.default_images()
    if "debian" in images:
        if not tarball_path().is_file():
            raise LxdSnapError(f"no {tarball_path()}: run `lxdsnap setup --image debian` first (it builds it)")
        tarballs[DEBIAN_ALIAS] = tarball_path()
    up = cluster.up(count, log, backend=backend, images=tarballs)
    first = up[0]
    print(f"use it: pytest --lxd-endpoint={first.socket}   (any member's socket, or https://{first.address})")
    return 0


def collect_garbage(endpoint: Endpoint, *, dry_run: bool, foreign: bool = False) -> int:
    """Clean what dead sessions left. gc is a session of its own: it holds a lease while it runs and
    claims (If-Match) each instance before it recovers it, so it never races a live session."""
    from pytest_lxdsnap.lxd.connection import connect
    from pytest_lxdsnap.lxd.lxdapi import FAULTS, describe
    from pytest_lxdsnap.safety.garbage import find_garbage
    from pytest_lxdsnap.safety.leases import close_lease, open_lease
    from pytest_lxdsnap.safety.ownership import SessionIdentity

    client = connect(endpoint)
    identity = SessionIdentity()
    if not dry_run:
        open_lease(client, identity)
    try:
        found = find_garbage(client, identity)
        cleaning = [g for g in found if g.kind not in ("foreign", "offline") or (foreign and g.kind == "foreign")]
        offline = [g for g in found if g.kind == "offline"]
        if not found:
            print("lxdsnap gc: nothing left by dead sessions")
            return 0
        failed = 0
        for garbage in found:
            if garbage not in cleaning:
                print(f"{garbage.kind} {garbage.what}: {garbage.why}")
                continue
            print(f"{'would clean' if dry_run else 'cleaning'} {garbage.what}: {garbage.why}")
            if dry_run:
                continue
            try:
                for line in garbage.clean():
                    print(f"  {line}")
            except FAULTS as exc:
                failed += 1
                print(f"  FAILED: {describe(exc)}", file=sys.stderr)
        if not cleaning:
            print("lxdsnap gc: nothing left by dead sessions")
        return 1 if failed or offline else 0
    finally:
        if not dry_run:
            close_lease(client, identity)


if __name__ == "__main__":
    sys.exit(main())
