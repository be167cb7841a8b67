"""Find Debian's own archive among the host's apt sources and add its backports suite safely (Incus on Debian 12).

Debian 12 has Incus in ``bookworm-backports`` only. ``lxdsnap setup --incus`` adds that suite from the mirror
the host already uses for Debian's archive, and an apt source counts as Debian's archive only when all of
these hold:

- it is an enabled ``deb`` entry (one-line ``.list`` or deb822 ``.sources``) for the release's own suite
  (``bookworm``) with the ``main`` component;
- it is signed by Debian: its ``Signed-By`` names only files of the ``debian-archive-keyring`` package
  (``/usr/share/keyrings/debian-archive-keyring.gpg`` and the per-release keyrings), or it has no
  ``Signed-By`` and the ``InRelease`` file apt last downloaded for it verifies with ``gpgv`` against
  Debian's keyring. An inline key block, a fingerprint or another vendor's keyring never counts.

The written source names the keyring by path (``Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg``,
which holds the automatic archive keys backports are signed with) and never copies a key. It is checked with
``apt-get update --print-uris`` (which reads every source and fetches nothing) before it is kept (the caller
removes it again when the real ``apt-get update`` fails). With no Debian source found, setup stops having
written nothing and says what to add. An existing ``bookworm-backports`` entry, from anyone, is left alone.

Everything takes a ``root`` (``/`` unless a test passes a fake one).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import stophook
from pytest_lxdsnap.lxd.backends import BACKPORTS_SOURCES, codename

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
KEYRING_PACKAGE_LIST = "var/lib/dpkg/info/debian-archive-keyring.list"  # under the root
APT_LISTS = "var/lib/apt/lists"  # under the root


@dataclass(frozen=True)
class AptEntry:
    """One apt source: a one-line ``deb`` line or a deb822 stanza (several URIs/suites in one)."""

    file: str
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""  # as written: keyring paths, fingerprints, or an inline key block

    def keyrings(self) -> list[str]:
        """The Signed-By keyring paths; [] when there is none or it is not paths only."""
        parts = [p for p in re.split(r"[\s,]+", self.signed_by.strip()) if p]
        return parts if parts and all(p.startswith("/") for p in parts) else []


def parse_one_line(file: str, text: str) -> list[AptEntry]:
    """``deb [opt=value ...] URI SUITE COMPONENT...`` lines (comments and ``deb-src`` included as written)."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not match:
            continue
        kind, options, uri, suite, components = match.groups()
        opts = dict(o.split("=", 1) for o in (options or "").split() if "=" in o)
        entries.append(AptEntry(file, (kind,), (uri,), (suite,), tuple(components.split()),
                                opts.get("signed-by", "")))
    return entries


def parse_deb822(file: str, text: str) -> list[AptEntry]:
    """deb822 stanzas (``Types:``/``URIs:``/``Suites:``/``Components:``/``Signed-By:``, multi-line values
    included); stanzas with ``Enabled: no`` are skipped."""
    entries = []
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    for stanza in re.split(r"\n[ \t]*\n", "\n".join(lines)):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif match := re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line):
                key = match.group(1).lower()
                fields[key] = match.group(2).strip()
        if not fields.get("types") or fields.get("enabled", "yes").lower() == "no":
            continue
        words = {k: tuple(fields.get(k, "").split()) for k in ("types", "uris", "suites", "components")}
        entries.append(AptEntry(file, words["types"], words["uris"], words["suites"], words["components"],
                                fields.get("signed-by", "").strip()))
    return entries


def read_sources(root: Path = Path("/")) -> list[AptEntry]:
    """Every apt source, in apt's order: sources.list, then sources.list.d's ``*.list`` and ``*.sources``."""
    etc = root / "etc/apt"
    entries = parse_one_line("/etc/apt/sources.list", (etc / "sources.list").read_text()) \
        if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    for path in sorted(parts.iterdir()) if parts.is_dir() else []:
        shown = f"/etc/apt/sources.list.d/{path.name}"
        if path.suffix == ".list":
            entries += parse_one_line(shown, path.read_text())
        elif path.suffix == ".sources":
            entries += parse_deb822(shown, path.read_text())
    return entries


def debian_keyrings(root: Path = Path("/")) -> set[str]:
    """Keyring files of the debian-archive-keyring package (from dpkg's file list), and its main keyring."""
    listing = root / KEYRING_PACKAGE_LIST
    files = listing.read_text().split() if listing.is_file() else []
    return {DEBIAN_KEYRING, *(f for f in files if f.endswith((".gpg", ".asc")))}


def release_file(uri: str, suite: str, root: Path = Path("/")) -> Path:
    """Where apt keeps the InRelease it downloaded for ``uri`` ``suite`` (apt's URI-to-file-name rule)."""
    bare = re.sub(r"^[A-Za-z0-9+.-]+://", "", uri)
    bare = re.sub(r"^[^/@]*@", "", bare).rstrip("/")
    return root / APT_LISTS / f"{bare}/dists/{suite}/InRelease".replace("/", "_")


def signed_by_debian(release: Path, root: Path = Path("/")) -> bool:
    """Whether ``release`` (an InRelease file) carries a good signature of Debian's archive keyring."""
    keyring = root / DEBIAN_KEYRING.lstrip("/")
    if not release.is_file() or not keyring.is_file() or not shutil.which("gpgv"):
        return False
    run = subprocess.run(["gpgv", "--keyring", str(keyring), str(release)], capture_output=True, check=False)
    return run.returncode == 0


def why_not_debian(entry: AptEntry, suite: str, root: Path = Path("/")) -> str:
    """'' when ``entry`` is Debian's archive for ``suite`` (the rule in the module docstring), else why not."""
    if "deb" not in entry.types or suite not in entry.suites or "main" not in entry.components:
        return f"not a deb source of {suite} main"
    if not entry.uris or entry.uris[0].startswith(("cdrom:", "file:", "copy:")):
        return "a local medium, not a mirror"
    if entry.signed_by:
        keyrings = entry.keyrings()
        if keyrings and set(keyrings) <= debian_keyrings(root):
            return ""
        return "signed by an inline key, a fingerprint or another vendor's keyring, not Debian's"
    if signed_by_debian(release_file(entry.uris[0], suite, root), root):
        return ""
    return (f"no Signed-By, and apt's InRelease for it ({release_file(entry.uris[0], suite)}) is missing or "
            f"not signed with {DEBIAN_KEYRING}")


def debian_archive(suite: str, root: Path = Path("/"), *,
                   purpose: str = "{suite}-backports (for Incus) cannot be added safely",
                   instead: str = "add {suite}-backports yourself") -> str:
    """The URI of the host's Debian archive for ``suite``; LxdSnapError saying what to add when there is none
    (``purpose``: what cannot be done without it; ``instead``: the other way out; both may name ``{suite}``)."""
    skipped = []
    for entry in read_sources(root):
        if "deb" not in entry.types or suite not in entry.suites or "main" not in entry.components:
            continue
        why = why_not_debian(entry, suite, root)
        if not why:
            return entry.uris[0]
        skipped.append(f"  {entry.uris[0] if entry.uris else '?'} in {entry.file}: {why}")
    seen = ("\nSources of " + suite + " main that do not count:\n" + "\n".join(skipped)) if skipped else ""
    raise LxdSnapError(
        f"no apt source of Debian's own archive for {suite} was found, so {purpose.format(suite=suite)}; "
        f"nothing was written.{seen}\nAdd Debian's archive, for example "
        f"/etc/apt/sources.list.d/debian.sources with\n  Types: deb\n  URIs: <your Debian mirror>/debian\n"
        f"  Suites: {suite} {suite}-updates\n  Components: main\n  Signed-By: {DEBIAN_KEYRING}\n"
        f"(or run `apt-get update` when the entry has no Signed-By), or {instead.format(suite=suite)}; then rerun.")


def has_suite(suite: str, root: Path = Path("/")) -> bool:
    """Whether any enabled deb source already names ``suite`` (then setup adds nothing: apt refuses two
    entries for one URI and suite with different Signed-By)."""
    return any("deb" in e.types and suite in e.suites for e in read_sources(root))


def backports_source(uri: str, suite: str) -> str:
    return (f"# Added by `lxdsnap setup --incus` for Incus; remove with `lxdsnap setup --undo --incus`.\n"
            f"Types: deb\nURIs: {uri}\nSuites: {suite}-backports\nComponents: main\nSigned-By: {DEBIAN_KEYRING}\n")


def apt_rejects(root: Path = Path("/")) -> str:
    """What apt says is wrong with the sources under ``root`` ('' when it reads them all); fetches nothing."""
    if not shutil.which("apt-get"):
        return ""
    etc = root / "etc/apt"
    with tempfile.TemporaryDirectory(prefix="lxdsnap-apt-") as lists:
        os.mkdir(os.path.join(lists, "partial"))
        run = subprocess.run(["apt-get", "update", "--print-uris", "-q",
                              "-o", f"Dir::Etc::SourceList={etc / 'sources.list'}",
                              "-o", f"Dir::Etc::SourceParts={etc / 'sources.list.d'}",
                              "-o", f"Dir::State::Lists={lists}"], capture_output=True, text=True, check=False)
    errors = [line for line in run.stderr.splitlines() if line.startswith("E:")]
    return "\n".join(errors) if run.returncode or errors else ""


def add_backports(root: Path = Path("/")) -> Path | None:
    """Add ``<codename>-backports`` from the host's Debian archive, unless some source already names it; the
    file written, or None. Raises LxdSnapError (having written nothing) when that cannot be done safely."""
    suite = codename(root)
    if has_suite(f"{suite}-backports", root):
        return None
    uri = debian_archive(suite, root)
    if not (root / DEBIAN_KEYRING.lstrip("/")).is_file():
        raise LxdSnapError(f"{DEBIAN_KEYRING} is missing: `apt-get install debian-archive-keyring`, then rerun")
    before = apt_rejects(root)
    if before:
        raise LxdSnapError(f"apt already refuses this host's sources, so setup adds none (nothing was written):\n"
                           f"{before}\nFix them (`apt-get update` shows the same), then rerun.")
    target = root / BACKPORTS_SOURCES
    if target.exists():
        raise LxdSnapError(f"{target} exists but enables no {suite}-backports: fix or remove it, then rerun")
    stophook.write_atomic(target, backports_source(uri, suite).encode(), 0o644)
    problem = apt_rejects(root)
    if problem:
        target.unlink()
        raise LxdSnapError(f"apt refused the {suite}-backports source setup wrote, so it was removed again "
                           f"(nothing changed):\n{problem}\nAdd {suite}-backports yourself, then rerun.")
    return target
