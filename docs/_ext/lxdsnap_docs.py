"""Sphinx directives that generate the reference tables from pytest-lxdsnap's own code.

- ``lxdsnap-options``: every pytest option, from ``pytest_lxdsnap.options.OPTIONS`` (name, flag, type,
  default, help, choices, ini); booleans also list their ``--no-`` switch.
- ``lxdsnap-pyproject-keys``: the ``[tool.lxdsnap]`` keys, from ``declarations.TOP_KEYS`` and ``CONTAINER_KEYS``.
- ``lxdsnap-marker``: the ``lxd`` marker's signature and its keyword options, from ``pytest_lxdsnap.markers``.
- ``lxdsnap-strategies``: the reset strategies and scopes, from ``session.strategy``.
- ``lxdsnap-exception-tree``: the exceptions of ``pytest_lxdsnap.errors`` as a tree by inheritance.

Also: dataclass defaults made by a factory show as ``...`` in signatures, and a bare ``https://`` in a
help text stays text instead of a link to nowhere.

Nothing here restates a default or a help text: a change in the code changes the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

_CODE = re.compile(r"`([^`]+)`")


def load_options() -> Sequence[Any]:
    """``pytest_lxdsnap.options.OPTIONS``: the one table the plugin registers its options from."""
    from pytest_lxdsnap.options import OPTIONS

    return tuple(OPTIONS)


def inline(text: str) -> list[nodes.Node]:
    """Text with ``code`` spans (single or double backticks) as literal nodes."""
    text = text.replace("``", "`")
    out: list[nodes.Node] = []
    position = 0
    for match in _CODE.finditer(text):
        if match.start() > position:
            out.append(nodes.Text(text[position:match.start()]))
        out.append(nodes.literal(match.group(1), match.group(1)))
        position = match.end()
    if position < len(text):
        out.append(nodes.Text(text[position:]))
    return out


def cell(*content: nodes.Node | str) -> nodes.entry:
    paragraph = nodes.paragraph()
    for part in content:
        if isinstance(part, str):
            paragraph.extend(inline(part))
        else:
            paragraph.append(part)
    return nodes.entry("", paragraph)


def code(text: str) -> nodes.literal:
    return nodes.literal(text, text)


def joined(parts: Iterable[nodes.Node], sep: str = ", ") -> list[nodes.Node]:
    out: list[nodes.Node] = []
    for part in parts:
        if out:
            out.append(nodes.Text(sep))
        out.append(part)
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[nodes.entry]], widths: Sequence[int]) -> nodes.table:
    group = nodes.tgroup(cols=len(headers))
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    head += nodes.row("", *(cell(h) for h in headers))
    body = nodes.tbody()
    for row in rows:
        body += nodes.row("", *row)
    group += head
    group += body
    result = nodes.table(classes=["lxdsnap-generated"])
    result += group
    return result


def default_text(option: Any) -> str:
    value = option.default
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def switches(option: Any) -> list[nodes.Node]:
    flags = [code(option.flag)]
    if option.type == "bool":
        flags.append(code("--no-" + option.flag[2:]))
    return joined(flags, " / ")


class OptionsDirective(SphinxDirective):
    """The table of pytest options."""

    def run(self) -> list[nodes.Node]:
        rows = []
        for option in load_options():
            kind = option.type
            if option.choices:
                kind_cell = cell(kind + ": ", *joined(code(c) for c in option.choices))
            else:
                kind_cell = cell(kind)
            rows.append([
                cell(*switches(option)),
                cell(code(option.name)) if option.ini else cell("command line only"),
                kind_cell,
                cell(code(default_text(option)) if option.default is not None else "not set"),
                cell(option.help),
            ])
        return [table(["option", "ini name", "type", "default", "help"], rows, [22, 18, 10, 10, 40])]


class PyprojectKeysDirective(SphinxDirective):
    """The keys of ``[tool.lxdsnap]`` and of each ``[tool.lxdsnap.containers.<name>]``."""

    def run(self) -> list[nodes.Node]:
        from pytest_lxdsnap import declarations

        top = declarations.TOP_KEYS.items()
        rows = [[cell(code(f"[{declarations.TABLE}] {key}")), cell(text)] for key, text in top]
        rows += [[cell(code(key)), cell(text)] for key, text in declarations.CONTAINER_KEYS.items()]
        return [table(["key", "meaning"], rows, [25, 75])]


class MarkerDirective(SphinxDirective):
    """The ``lxd`` marker's signature (as ``pytest --markers`` shows it) and its keyword options, from
    ``pytest_lxdsnap.markers``."""

    def run(self) -> list[nodes.Node]:
        from pytest_lxdsnap import markers

        signature, _, meaning = markers.MARKER_HELP.partition(": ")
        block = nodes.literal_block(f"@pytest.mark.{signature}", f"@pytest.mark.{signature}", language="python")
        para = nodes.paragraph("", "", *inline(meaning[:1].upper() + meaning[1:] + "."))
        rows = [[cell(code(key)), cell(text)] for key, text in markers.MARKER_OPTIONS.items()]
        return [block, para, table(["keyword", "meaning"], rows, [20, 80])]


class StrategiesDirective(SphinxDirective):
    """The reset strategies (``:scopes:`` for the scopes instead)."""

    option_spec = {"scopes": lambda value: True}  # noqa: RUF012 - docutils' own shape

    def run(self) -> list[nodes.Node]:
        from pytest_lxdsnap.session import strategy

        choices = strategy.SCOPES if "scopes" in self.options else strategy.STRATEGIES
        rows = [[cell(code(key)), cell(text)] for key, text in choices.items()]
        return [table(["scope" if "scopes" in self.options else "strategy", "meaning"], rows, [20, 80])]


class ExceptionTreeDirective(SphinxDirective):
    """The classes of ``pytest_lxdsnap.errors`` as a tree by inheritance, each linked to its entry."""

    def run(self) -> list[nodes.Node]:
        from sphinx import addnodes

        from pytest_lxdsnap import errors

        classes = [c for c in vars(errors).values() if isinstance(c, type) and c.__module__ == errors.__name__]

        def item(cls: type) -> nodes.list_item:
            target = f"{errors.__name__}.{cls.__name__}"
            ref = addnodes.pending_xref("", refdomain="py", reftype="exc", reftarget=target, refexplicit=True)
            ref += code(cls.__name__)
            bases = [b.__name__ for b in cls.__bases__ if b.__module__ == "builtins" and b is not Exception]
            para = nodes.paragraph("", "", ref, *([nodes.Text(f" (also a {', '.join(bases)})")] if bases else []))
            entry = nodes.list_item("", para)
            children = [c for c in classes if cls in c.__bases__]
            if children:
                entry += nodes.bullet_list("", *(item(c) for c in children))
            return entry

        roots = [c for c in classes if not any(b in classes for b in c.__bases__)]
        return [nodes.bullet_list("", *(item(c) for c in roots))]


def dataclass_factories(app: Sphinx, what: str, name: str, obj: object, options: object, signature: str | None,
                        return_annotation: str | None) -> tuple[str | None, str | None] | None:
    """A dataclass field with a ``default_factory`` shows as ``=<factory>``, which the Python domain cannot
    parse: show it as ``=...`` (a default that is computed)."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


class BareSchemes(SphinxPostTransform):
    """Help texts say "an https:// URL"; docutils links the bare ``https://`` (to nowhere). Keep it text."""

    default_priority = 5

    def run(self, **kwargs: Any) -> None:
        for ref in list(self.document.findall(nodes.reference)):
            if ref.get("refuri") in ("http://", "https://"):
                ref.replace_self(nodes.Text(ref.astext()))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-signature", dataclass_factories)
    app.add_post_transform(BareSchemes)
    app.add_directive("lxdsnap-options", OptionsDirective)
    app.add_directive("lxdsnap-pyproject-keys", PyprojectKeysDirective)
    app.add_directive("lxdsnap-marker", MarkerDirective)
    app.add_directive("lxdsnap-strategies", StrategiesDirective)
    app.add_directive("lxdsnap-exception-tree", ExceptionTreeDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
