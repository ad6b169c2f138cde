"""Sphinx helpers of the tnborn documentation (also used by ``tests/test_docs.py``).

- :func:`write_api_pages` writes one reference page per public module of
  tnborn (the names of its ``__all__``, grouped by kind) and the module index;
  autosummary then writes one page per name. Nothing is listed by hand, so a
  new module or a new name appears by itself.
- :func:`resolve_conditionals` keeps or drops the blocks of a page written
  between ``<!-- tnborn:if NAME -->``, an optional ``<!-- tnborn:else -->``
  and ``<!-- tnborn:end -->`` depending on whether ``tnborn.NAME`` exists when
  the documentation is built (pages can describe code that other developers
  are still writing). ``build.gallery`` is true when the examples are run,
  ``page.NAME`` when the page ``docs/NAME.md`` exists.
- ``<!-- tnborn:cli-help -->`` becomes the ``--help`` text of every command
  of the ``tnborn`` command line.
- ``<!-- tnborn:settings-table SweepSettings -->`` (or ``GradientSettings``)
  becomes the table of that class's fields: name, command-line flag, default,
  per-loop or not and the help text, all read from the dataclass
  (:func:`settings_table`), so the page cannot drift from the code.
- The ``<!-- tnborn:changelog -->`` ... ``<!-- tnborn:changelog-end -->``
  block of ``changelog.md`` is replaced by ``CHANGELOG.md`` when it exists.
- :func:`figure_scraper` lets sphinx-gallery capture the figures of
  :mod:`tnborn.plotting`, which are made without pyplot.
- References to re-exported names (``tnborn.save``) resolve to the page of the
  module that defines them.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import re
from pathlib import Path
from typing import Any

__all__ = [
    "public_modules",
    "classify",
    "available",
    "resolve_conditionals",
    "cli_help",
    "write_api_pages",
    "figure_scraper",
    "setup",
]

_IF_BLOCK = re.compile(
    r"<!-- tnborn:if (?P<cond>[\w.]+) -->\n(?P<yes>.*?)"
    r"(?:<!-- tnborn:else -->\n(?P<no>.*?))?<!-- tnborn:end -->\n?",
    re.S,
)
_DOCS = Path(__file__).resolve().parents[1]
_CHANGELOG = re.compile(r"<!-- tnborn:changelog -->.*?<!-- tnborn:changelog-end -->", re.S)


def public_modules() -> list[str]:
    """Return every importable public module of tnborn, sorted.

    A module is public when no component of its dotted path starts with
    ``_`` (so ``tnborn._version`` and ``tnborn.cli_commands._common`` are not).

    Returns
    -------
    list of str
        Dotted module names, ``"tnborn"`` first.
    """
    import tnborn

    names = ["tnborn"]
    for info in pkgutil.walk_packages(tnborn.__path__, prefix="tnborn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def _canonical(obj: object) -> str | None:
    """``module.qualname`` of a tnborn class or function, where it is defined."""
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qual, str) and mod.startswith("tnborn") and "<" not in qual:
        return f"{mod}.{qual}"
    return None


def classify(modname: str) -> tuple[dict[str, list[str]], list[str]]:
    """Group the names of a module's ``__all__`` by kind.

    Parameters
    ----------
    modname : str
        A public tnborn module.

    Returns
    -------
    groups : dict
        ``"Classes"``, ``"Functions"``, ``"Exceptions"``, ``"Data"`` -> names
        documented on this module's page.
    reexports : list of str
        Canonical dotted names of the classes and functions that the module
        imports from elsewhere (``tnborn.MPSBornMachine`` is
        ``tnborn.geometries.mps.MPSBornMachine``): documented once, where
        they are defined, and linked from here.
    """
    module = importlib.import_module(modname)
    groups: dict[str, list[str]] = {"Classes": [], "Functions": [], "Exceptions": [], "Data": []}
    reexports: list[str] = []
    for name in getattr(module, "__all__", []):
        if name.startswith("__"):
            continue
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        canon = _canonical(obj) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
        if canon is not None and obj.__module__ != modname:
            reexports.append(canon)
        elif inspect.isclass(obj) and issubclass(obj, BaseException):
            groups["Exceptions"].append(name)
        elif inspect.isclass(obj):
            groups["Classes"].append(name)
        elif inspect.isroutine(obj):
            groups["Functions"].append(name)
        else:
            groups["Data"].append(name)
    return groups, reexports


def _relative(name: str, modname: str) -> str:
    """``name`` relative to ``modname`` when inside it (autosummary refuses the current module's prefix)."""
    return name[len(modname) + 1:] if name.startswith(modname + ".") else name


def _module_page(modname: str, modules: list[str]) -> str:
    """reST of one module page: its docstring, then one autosummary table per kind."""
    groups, reexports = classify(modname)
    title = f"``{modname}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", "",
             f".. currentmodule:: {modname}", ""]
    for heading, items in groups.items():
        if not items:
            continue
        template = "autosummary/tnborn_data.rst" if heading == "Data" else "autosummary/tnborn_object.rst"
        lines += [f".. rubric:: {heading}", "", ".. autosummary::", "   :toctree: .",
                  f"   :template: {template}", "", *[f"   {n}" for n in items], ""]
    if reexports:
        heading = "Names" if modname == "tnborn" else "Re-exported names"
        lines += [f".. rubric:: {heading}", "",
                  f"Importable as ``{modname}.<name>``; each is documented in the module "
                  "that defines it.", "", ".. autosummary::", "",
                  *[f"   ~{_relative(c, modname)}" for c in reexports], ""]
    subs = [m for m in modules if m.rsplit(".", 1)[0] == modname and m != modname]
    if subs:
        lines += [".. rubric:: Submodules", "", ".. autosummary::", "",
                  *[f"   {m.rsplit('.', 1)[1]}" for m in subs], ""]
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def write_api_pages(docs: Path) -> list[str]:
    """Write ``api/generated/<module>.rst`` for every public module, and ``api/generated/index.rst``.

    Pages of modules or names that no longer exist are deleted (a stale page
    would be a document outside every toctree, which is a warning).

    Parameters
    ----------
    docs : Path
        The documentation source folder.

    Returns
    -------
    list of str
        The documented modules.
    """
    out = docs / "api" / "generated"
    modules = public_modules()
    expected = set(modules) | {"index"}
    for modname in modules:
        _write_if_changed(out / f"{modname}.rst", _module_page(modname, modules))
        groups, _ = classify(modname)
        # autosummary writes the page of name n of module m as m.n.rst beside m.rst
        expected.update(f"{modname}.{n}" for items in groups.values() for n in items)
    for page in out.glob("*.rst"):
        if page.stem not in expected:
            page.unlink()
    index = ["Modules", "=======", "", ".. toctree::", "   :maxdepth: 1", "",
             *[f"   {m}" for m in modules], ""]
    _write_if_changed(out / "index.rst", "\n".join(index))
    return modules


def available(dotted: str, gallery: bool = True) -> bool:
    """Tell whether ``tnborn.<dotted>`` (a name or a module) exists now.

    Parameters
    ----------
    dotted : str
        ``"TreeBornMachine"``, ``"cli.build_parser"``, ..., the pseudo-name
        ``"build.gallery"``, or ``"page.<name>"``: whether the page
        ``docs/<name>.md`` (or ``.rst``) exists (``page.user_guide.cli``).
    gallery : bool
        Value of ``build.gallery``: whether the examples are run.

    Returns
    -------
    bool
        Whether it exists.
    """
    if dotted == "build.gallery":
        return gallery
    if dotted.startswith("page."):
        page = _DOCS / dotted[len("page."):].replace(".", "/")
        return page.with_suffix(".md").is_file() or page.with_suffix(".rst").is_file()
    import tnborn

    obj: Any = tnborn
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module("tnborn." + ".".join(parts[: i + 1]))
            except ImportError:
                return False
    return True


def resolve_conditionals(text: str, gallery: bool = True) -> str:
    """Keep or drop the ``<!-- tnborn:if NAME -->`` blocks of a page.

    Parameters
    ----------
    text : str
        Page source.
    gallery : bool
        Whether the examples are run (the ``build.gallery`` condition).

    Returns
    -------
    str
        The source with every block replaced by its first or its ``else`` part.
    """
    return _IF_BLOCK.sub(
        lambda m: m.group("yes") if available(m.group("cond"), gallery) else (m.group("no") or ""),
        text,
    )


def cli_help(width: int = 90) -> str:
    """Return Markdown with the ``--help`` text of ``tnborn`` and of each command.

    Parameters
    ----------
    width : int
        Line width of the help text.

    Returns
    -------
    str
        One heading and one ``text`` code block per command.
    """
    from tnborn.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps to the terminal width
    try:
        parser = build_parser()
        pages = [("tnborn --help", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    pages.append((f"tnborn {name} --help", sub.format_help()))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    out = []
    for title, text in pages:
        out += [f"### `{title}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


_SETTINGS_TABLE = re.compile(r"<!-- tnborn:settings-table (\w+) -->")


def settings_table(class_name: str) -> str:
    """Return a Markdown table of the fields of a settings dataclass of :mod:`tnborn.training.settings`.

    Parameters
    ----------
    class_name : str
        ``"SweepSettings"`` or ``"GradientSettings"``.

    Returns
    -------
    str
        One row per field: setting, command-line flag, default, per loop, meaning.
    """
    from dataclasses import fields

    from tnborn.training import settings as module

    cls = getattr(module, class_name)
    helps = cls.help()
    rows = ["| setting | flag | default | per loop | meaning |", "|---|---|---|---|---|"]
    for f in fields(cls):
        flag = "--" + cls.flag_name(f.name).replace("_", "-")
        text = helps[f.name].replace(" (per loop)", "").replace(" (per epoch)", "").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{flag}` | `{f.default!r}` | {'yes' if f.name in cls.schedulable else ''} "
                    f"| {text} |")
    return "\n".join(rows)


def _figures_in(value: Any, depth: int = 0) -> list[Any]:
    from matplotlib.figure import Figure

    if isinstance(value, Figure):
        return [value]
    if depth < 1 and isinstance(value, (list, tuple)):
        return [f for v in value for f in _figures_in(v, depth + 1)]
    if depth < 1 and isinstance(value, dict):
        return [f for v in value.values() for f in _figures_in(v, depth + 1)]
    return []


def figure_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """sphinx-gallery image scraper for figures that pyplot does not know about.

    :mod:`tnborn.plotting` returns :class:`matplotlib.figure.Figure` objects
    made without pyplot, which the built-in matplotlib scraper cannot see.
    After every code block this scraper saves each figure held in a global
    variable of the example (or in a list, tuple or dict there) that it has
    not saved before, in the order the variables were first assigned.
    Figures that pyplot manages are left to sphinx-gallery's ``"matplotlib"``
    scraper, which must come after this one in ``image_scrapers``.

    Parameters
    ----------
    block : tuple
        The code block just executed.
    block_vars : dict
        sphinx-gallery's block variables (``example_globals``,
        ``image_path_iterator``).
    gallery_conf : dict
        sphinx-gallery's configuration.

    Returns
    -------
    str
        reST embedding the new images (empty if there are none).
    """
    from matplotlib._pylab_helpers import Gcf
    from sphinx_gallery.scrapers import figure_rst

    # figures pyplot knows are saved by the "matplotlib" scraper, which runs
    # after this one: mark them so that later blocks do not save them again
    pyplot_figures = {id(m.canvas.figure) for m in Gcf.get_all_fig_managers()}
    paths = []
    seen: set[int] = set()
    for value in list(block_vars["example_globals"].values()):
        for fig in _figures_in(value):
            if id(fig) in seen or getattr(fig, "_tnborn_scraped", False):
                continue
            seen.add(id(fig))
            if id(fig) in pyplot_figures:
                fig._tnborn_scraped = True
                continue
            path = next(block_vars["image_path_iterator"])
            fig.savefig(path, dpi=100, bbox_inches="tight")
            fig._tnborn_scraped = True
            paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"]) if paths else ""


def _source_read(app, docname: str, source: list[str]) -> None:
    if "<!-- tnborn:" in source[0]:
        # what such a page shows depends on the code and the other pages: read it every build
        dynamic = getattr(app.env, "tnborn_dynamic_pages", set())
        dynamic.add(docname)
        app.env.tnborn_dynamic_pages = dynamic
    text = resolve_conditionals(source[0], gallery=app.config.tnborn_gallery)
    if "<!-- tnborn:cli-help -->" in text:
        text = text.replace("<!-- tnborn:cli-help -->", cli_help())
    text = _SETTINGS_TABLE.sub(lambda m: settings_table(m.group(1)), text)
    if docname == "changelog" and (Path(app.srcdir).parent / "CHANGELOG.md").exists():
        text = _CHANGELOG.sub(lambda _: "```{include} ../CHANGELOG.md\n:heading-offset: 1\n```", text)
    source[0] = text


def _outdated(app, env, added, changed, removed) -> list[str]:
    return sorted(getattr(env, "tnborn_dynamic_pages", set()) & set(env.found_docs))


def _missing_reference(app, env, node, contnode):
    """Resolve ``tnborn.save`` (a re-export) to ``tnborn.checkpoint.save`` (where it is documented)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("tnborn."):
        return None
    parts = target.split(".")
    obj: Any = None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        break
    else:
        return None
    canon = _canonical(obj)
    if canon is None or canon == target:
        return None
    new = node.deepcopy()
    new["reftarget"] = canon
    return env.get_domain("py").resolve_xref(
        env, node.get("refdoc"), app.builder, node.get("reftype"), canon, new, contnode
    )


def setup(app) -> dict[str, Any]:
    """Register the hooks and write the API pages.

    Parameters
    ----------
    app : sphinx.application.Sphinx
        The application.

    Returns
    -------
    dict
        Extension metadata.
    """
    app.add_config_value("tnborn_gallery", True, "env")
    write_api_pages(Path(app.srcdir))
    app.connect("source-read", _source_read)
    app.connect("env-get-outdated", _outdated)
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
