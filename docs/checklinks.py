"""Offline link check of the built docs: `python docs/checklinks.py docs/_build/html`.

Sphinx's linkcheck builder needs the network; this machine and CI have none. This reads every HTML page of
the build and fails (exit 1, one line per problem) on:

- a relative link (``href``/``src``) that does not resolve to a file of the build, or whose ``#anchor`` is no
  ``id`` (or ``<a name>``) in the target page;
- an external URL that is not listed in ``docs/external-links.txt``, the reviewed allowlist (one URL per
  line; blank lines and ``#`` comments ignored). A typo or a new external link fails until it is reviewed
  and added there; a listed URL that no page uses any more is reported too, so the list stays true.

Standard library only.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
ALLOWLIST = HERE / "external-links.txt"
LINK_ATTRIBUTES = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src", "source": "src"}
EXTERNAL_SCHEMES = {"http", "https", "ftp", "mailto", "file"}
IGNORED_SCHEMES = {"data", "javascript"}  # inline data, furo's own no-op handlers


class Page(HTMLParser):
    """The ids and the links of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name" if tag == "a" else "id"):
            if values.get(key):
                self.ids.add(str(values[key]))
        wanted = LINK_ATTRIBUTES.get(tag)
        if wanted and values.get(wanted) is not None:
            self.links.append(str(values[wanted]).strip())

    handle_startendtag = handle_starttag


def read_allowlist(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    lines = (line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
             for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line}


def check(root: Path, allowlist: set[str]) -> list[str]:
    """Every problem in the build at ``root``, as ``page: link: why`` lines."""
    pages: dict[Path, Page] = {}
    for path in sorted(root.rglob("*.html")):
        page = Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        pages[path.resolve()] = page
    problems: list[str] = []
    used_external: set[str] = set()
    for path, page in pages.items():
        shown = path.relative_to(root.resolve())
        for link in page.links:
            parts = urlsplit(link)
            scheme = parts.scheme.lower()
            if scheme in IGNORED_SCHEMES or link in ("", "#"):
                continue
            if scheme or link.startswith("//"):
                if scheme not in EXTERNAL_SCHEMES and not link.startswith("//"):
                    problems.append(f"{shown}: {link}: unknown URL scheme {scheme!r}")
                    continue
                used_external.add(link)
                if link not in allowlist:
                    problems.append(f"{shown}: {link}: external URL not in {ALLOWLIST.name} (review it, then add it)")
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if parts.path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(root.resolve()):
                problems.append(f"{shown}: {link}: points outside the build")
                continue
            if not target.exists():
                problems.append(f"{shown}: {link}: no such file {target.relative_to(root.resolve())}")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in pages[target].ids:
                problems.append(f"{shown}: {link}: no id {fragment!r} in {target.relative_to(root.resolve())}")
    for url in sorted(allowlist - used_external):
        problems.append(f"{ALLOWLIST.name}: {url}: listed but no page links to it any more (remove it)")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/checklinks.py BUILD_DIR (the html output of sphinx-build)", file=sys.stderr)
        return 2
    root = Path(argv[0])
    if not (root / "index.html").is_file():
        print(f"checklinks: {root}/index.html not found: build the docs first", file=sys.stderr)
        return 2
    problems = check(root, read_allowlist(ALLOWLIST))
    counts: defaultdict[str, int] = defaultdict(int)
    for line in problems:
        counts[line.split(": ", 1)[0]] += 1
        print(line)
    pages = sum(1 for _ in root.rglob("*.html"))
    if problems:
        print(f"checklinks: {len(problems)} broken or unreviewed link(s) in {len(counts)} file(s)", file=sys.stderr)
        return 1
    print(f"checklinks: {pages} pages, every relative link and anchor resolves, every external URL is reviewed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
