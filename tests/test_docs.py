"""Tests of the documentation: docstrings of every public name, the code on the pages, the build.

- Every name in the ``__all__`` of tnborn and of each public module (no path
  component starting with ``_``), and every public method of those classes,
  has a numpydoc docstring: a one-line summary, a ``Parameters`` section when
  it takes parameters and a ``Returns`` (or ``Yields``) section when it
  returns a value. Properties need only the summary; data needs a ``#:``
  comment. Known gaps in other modules are listed in :data:`KNOWN_GAPS`, so
  that a new gap fails while the old ones wait for their owners.
- Every ``python`` code block of a documentation page runs, page by page, in
  order (blocks that should not run are written as ``{code-block} python``).
- The whole site builds with warnings as errors (slow; skipped without the
  documentation tools).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tnborn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GALLERY = ROOT / "examples" / "gallery"
sys.path.insert(0, str(DOCS / "_ext"))
import tnborn_docs  # noqa: E402  (docs/_ext/tnborn_docs.py; needs no Sphinx)

sys.path.remove(str(DOCS / "_ext"))

#: Public names whose docstrings are known to lack something (qualified name ->
#: what is missing), in modules whose owners were asked to complete them. The
#: test skips them; delete an entry once it is fixed.
KNOWN_GAPS: dict[str, str] = {}


# --------------------------------------------------------------------------- #
# docstring checks
# --------------------------------------------------------------------------- #
_SECTION = re.compile(r"^(?P<name>[A-Z][A-Za-z ]+)\n-{3,}\s*$", re.M)


def _sections(doc: str) -> set[str]:
    return {m.group("name").strip() for m in _SECTION.finditer(inspect.cleandoc(doc))}


def _summary_problem(doc: str | None) -> str | None:
    if not doc or not doc.strip():
        return "no docstring"
    lines = inspect.cleandoc(doc).splitlines()
    if not lines[0].strip():
        return "the docstring does not start with a summary line"
    if len(lines) > 1 and lines[1].strip():
        return "the summary is longer than one line (no blank line after the first)"
    return None


def _parameters(func) -> list[str]:
    """Names of the parameters a caller passes (no self/cls)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    names = list(sig.parameters)
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return names


def _returns_value(func) -> bool:
    """Whether ``func`` returns something other than None (annotation, else its source)."""
    func = inspect.unwrap(func)
    try:
        ann = inspect.signature(func).return_annotation
    except (TypeError, ValueError):
        ann = inspect.Signature.empty
    if ann is not inspect.Signature.empty:
        return ann not in (None, "None", type(None))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0]

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(child, ast.Return) and child.value is not None and not (
                isinstance(child.value, ast.Constant) and child.value.value is None
            ):
                return True
            if walk(child):
                return True
        return False

    return walk(body)


def _function_problems(func, doc: str | None) -> list[str]:
    problem = _summary_problem(doc)
    if problem:
        return [problem]
    sections = _sections(doc)
    out = []
    if _parameters(func) and "Parameters" not in sections:
        out.append("no Parameters section")
    if _returns_value(func) and not ({"Returns", "Yields"} & sections):
        out.append("no Returns section")
    return out


def _class_problems(cls) -> list[str]:
    doc = cls.__doc__
    problem = _summary_problem(doc)
    if problem:
        return [problem]
    if issubclass(cls, BaseException) or "__init__" not in cls.__dict__:
        return []
    if not _parameters(cls.__init__):
        return []
    sections = _sections(doc) | _sections(cls.__init__.__doc__ or "")
    wanted = {"Parameters", "Attributes"} if dataclasses.is_dataclass(cls) else {"Parameters"}
    return [] if wanted & sections else ["no Parameters section (class or __init__ docstring)"]


def _own_public_members(cls):
    """Public methods and properties that ``cls`` defines itself."""
    for name, value in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, value, "property"
        elif isinstance(value, (staticmethod, classmethod)):
            yield name, value.__func__, "method"
        elif inspect.isfunction(value):
            yield name, value, "method"


def _data_documented(module, name: str) -> bool:
    """Whether module-level ``name`` has a ``#:`` comment before it or a docstring after it."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return False
    lines = source.splitlines()
    tree = ast.parse(source)
    for i, node in enumerate(tree.body):
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        if name not in targets:
            continue
        if node.lineno >= 2 and lines[node.lineno - 2].strip().startswith("#:"):
            return True
        following = tree.body[i + 1] if i + 1 < len(tree.body) else None
        return isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant) \
            and isinstance(following.value.value, str)
    return False


def _is_tnborn(obj) -> bool:
    """Whether a class or function is defined in tnborn (not an alias of a foreign one)."""
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and module.split(".")[0] == "tnborn"


def _public_objects() -> list[tuple[str, str, str]]:
    """``(qualified name, module, name)`` of every public name, once, where it is defined."""
    seen: set[str] = set()
    out = []
    for modname in tnborn_docs.public_modules():
        out.append((modname, modname, ""))
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", []):
            if name.startswith("__"):
                continue
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            own = (inspect.isclass(obj) or inspect.isroutine(obj)) and _is_tnborn(obj)
            qual = f"{obj.__module__}.{obj.__qualname__}" if own else f"{modname}.{name}"
            if qual in seen:
                continue
            seen.add(qual)
            out.append((qual, modname, name))
            if own and inspect.isclass(obj) and not issubclass(obj, BaseException):
                for member, _, _ in _own_public_members(obj):
                    mq = f"{qual}.{member}"
                    if mq not in seen:
                        seen.add(mq)
                        out.append((mq, modname, f"{name}.{member}"))
    return out


def _problems(modname: str, name: str) -> list[str]:
    module = importlib.import_module(modname)
    if not name:
        problem = _summary_problem(module.__doc__)
        return [problem] if problem else []
    if "." in name:
        cls_name, member = name.split(".", 1)
        cls = getattr(module, cls_name)
        raw = cls.__dict__[member]
        if isinstance(raw, property):
            problem = _summary_problem(inspect.getdoc(raw))
            return [problem] if problem else []
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        # a method without a docstring of its own inherits its base class's one
        doc = func.__doc__ or inspect.getdoc(getattr(cls, member))
        return _function_problems(func, doc)
    obj = getattr(module, name)
    if inspect.isclass(obj) and _is_tnborn(obj):
        return _class_problems(obj)
    if inspect.isroutine(obj) and _is_tnborn(obj):
        return _function_problems(obj, obj.__doc__)
    # data, or an alias of something defined elsewhere (``Node = Hashable``)
    return [] if _data_documented(module, name) else ["no #: comment (or docstring) for the data"]


def test_public_names_have_numpydoc_docstrings():
    """Every public name outside :data:`KNOWN_GAPS` has a complete numpydoc docstring."""
    objects = _public_objects()
    assert len(objects) > 50  # the walk found the package
    new_gaps = []
    for qual, modname, name in objects:
        if qual in KNOWN_GAPS:
            continue
        problems = _problems(modname, name)
        if problems:
            new_gaps.append(f"{qual}: {'; '.join(problems)}")
    assert not new_gaps, "public names with incomplete docstrings:\n" + "\n".join(new_gaps)


def test_known_gaps_are_still_gaps():
    """Every :data:`KNOWN_GAPS` entry names a public name that still has a gap (no stale entries)."""
    gaps = {qual for qual, modname, name in _public_objects() if _problems(modname, name)}
    stale = sorted(set(KNOWN_GAPS) - gaps)
    assert not stale, "fixed or removed, delete from KNOWN_GAPS: " + ", ".join(stale)


def test_docstring_checker_catches_gaps():
    def documented(a: int) -> int:
        """Add one.

        Parameters
        ----------
        a : int
            A number.

        Returns
        -------
        int
            ``a + 1``.
        """
        return a + 1

    def no_returns(a):
        """Add one.

        Parameters
        ----------
        a : int
            A number.
        """
        return a + 1

    def no_parameters(a: int) -> None:
        """Do nothing."""

    def long_summary() -> None:
        """Do nothing
        at all."""

    assert _function_problems(documented, documented.__doc__) == []
    assert _function_problems(no_returns, no_returns.__doc__) == ["no Returns section"]
    assert _function_problems(no_parameters, no_parameters.__doc__) == ["no Parameters section"]
    assert "longer than one line" in _function_problems(long_summary, long_summary.__doc__)[0]
    assert _function_problems(lambda: None, None) == ["no docstring"]


# --------------------------------------------------------------------------- #
# the API reference covers every public name
# --------------------------------------------------------------------------- #
def test_api_pages_cover_every_public_name():
    modules = tnborn_docs.public_modules()
    assert "tnborn" in modules and all(not p.startswith("_") for m in modules for p in m.split("."))
    for modname in modules:
        groups, reexports = tnborn_docs.classify(modname)
        listed = {n for items in groups.values() for n in items} | {c.rsplit(".", 1)[1] for c in reexports}
        module = importlib.import_module(modname)
        wanted = {n for n in getattr(module, "__all__", []) if not n.startswith("__")
                  and not inspect.ismodule(getattr(module, n))}
        assert wanted <= listed, (modname, sorted(wanted - listed))
        for canon in reexports:  # each re-export is documented on the page of its own module
            home, name = canon.rsplit(".", 1)
            assert name in {n for items in tnborn_docs.classify(home)[0].values() for n in items}, canon


def test_conditional_blocks():
    text = ("a\n<!-- tnborn:if MPSBornMachine -->\nyes\n<!-- tnborn:else -->\nno\n<!-- tnborn:end -->\n"
            "<!-- tnborn:if NoSuchThing -->\nhidden\n<!-- tnborn:end -->\n"
            "<!-- tnborn:if build.gallery -->\ngallery\n<!-- tnborn:end -->\nb\n")
    assert tnborn_docs.resolve_conditionals(text, gallery=False) == "a\nyes\nb\n"
    assert tnborn_docs.resolve_conditionals(text, gallery=True) == "a\nyes\ngallery\nb\n"
    pages = "<!-- tnborn:if page.user_guide.sweeps -->\nx\n<!-- tnborn:end -->\n" \
            "<!-- tnborn:if page.no_such_page -->\ny\n<!-- tnborn:end -->\n"
    assert tnborn_docs.resolve_conditionals(pages) == "x\n"


# --------------------------------------------------------------------------- #
# code on the pages
# --------------------------------------------------------------------------- #
_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


def _pages_with_code() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and _PYTHON_BLOCK.search(p.read_text()))


def test_some_pages_have_code():
    pages = {p.relative_to(DOCS).as_posix() for p in _pages_with_code()}
    assert {"getting_started.md", "user_guide/checkpoints.md", "user_guide/sampling.md"} <= pages


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_code_runs(page, tmp_path, monkeypatch):
    """Run the page's ``python`` blocks in order, in one namespace, in a temporary folder."""
    _run_page(page, tmp_path, monkeypatch)


def _run_page(page: Path, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    # a page may register a geometry: keep it out of the rest of the session
    monkeypatch.setattr(tnborn.registry, "_GEOMETRIES", dict(tnborn.registry._GEOMETRIES))
    text = tnborn_docs.resolve_conditionals(page.read_text(), gallery=False)
    namespace: dict = {"__name__": "__docs__"}
    for i, match in enumerate(_PYTHON_BLOCK.finditer(text)):
        code = compile(match.group("code"), f"{page.name}[block {i}]", "exec")
        exec(code, namespace)  # noqa: S102  (the documentation's own examples)
    return namespace


def test_the_geometry_of_the_adding_page_honours_the_contract(tmp_path, monkeypatch):
    """The comb of docs/geometries/adding.md: exact log P, samplers, gradient, checkpoint, gauge moves."""
    import contract

    _run_page(DOCS / "geometries" / "adding.md", tmp_path, monkeypatch)
    assert "comb" in tnborn.available_geometries()
    cls = tnborn.get_geometry("comb")
    model = cls.random(9, bond_dim=2, seed=3)
    assert type(model) is cls and model.is_tree and cls.builds_trees
    contract.check_log_prob(model)
    contract.check_normalisation(model)
    contract.check_sampler(model)
    contract.check_conditional_sampler(model)
    contract.check_gradient(model, torch.as_tensor(tnborn.bars_and_stripes(3, 3)[:6]).long())
    contract.check_move_center(model)
    contract.check_merge_split(model)
    contract.check_checkpoint_roundtrip(model, tmp_path / "comb.tnb")


# --------------------------------------------------------------------------- #
# gallery and build
# --------------------------------------------------------------------------- #
def test_gallery_examples_have_a_title():
    scripts = sorted(GALLERY.glob("*.py"))
    assert {p.name for p in scripts} >= {"plot_bars_and_stripes.py", "plot_bond_dimensions.py",
                                        "plot_mnist_inpainting.py", "plot_mps_vs_tree.py"}
    for script in scripts:
        doc = ast.get_docstring(ast.parse(script.read_text()))
        assert doc, f"{script.name}: sphinx-gallery needs a module docstring"
        lines = doc.splitlines()
        assert len(lines) >= 2 and set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0]), \
            f"{script.name}: the docstring must start with a title underlined with '='"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    """``python -m sphinx -W --keep-going -b html docs <tmp>`` succeeds (runs the gallery)."""
    for module in ("sphinx", "furo", "myst_parser", "sphinx_gallery", "sphinx_copybutton"):
        pytest.importorskip(module)
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    for page in ("index.html", "getting_started.html", "user_guide/sweeps.html",
                 "api/generated/tnborn.html", "auto_examples/index.html",
                 "auto_examples/plot_bond_dimensions.html"):
        assert (out / page).is_file(), page
    assert list((out / "_images").glob("sphx_glr_plot_bond_dimensions_001.png"))


@pytest.mark.parametrize("name", ["SweepSettings", "GradientSettings"])
def test_settings_tables_are_generated_from_the_dataclasses(name):
    """The settings tables of the user guide list every field with its flag and default."""
    from dataclasses import fields

    from tnborn.training import settings

    cls = getattr(settings, name)
    table = tnborn_docs.settings_table(name)
    assert table.count("\n") == len(fields(cls)) + 1  # header, rule, one row per field
    for f in fields(cls):
        assert f"| `{f.name}` | `--{cls.flag_name(f.name).replace('_', '-')}` | `{f.default!r}` |" in table
    assert f"<!-- tnborn:settings-table {name} -->" in (DOCS / "user_guide" / "sweeps.md").read_text()
