"""The shape of the house: layers import downwards only, no cycles, no Streamlit below app/, small modules, one
field schema (the artifact README's table is generated from it), and a wheel that installs and imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "precompute"
# The real order, bottom first: each group of precompute names the groups it may import (besides itself), so two
# groups that must not know each other (the science and the artifact files; the live boundary and the CLI's jobs)
# are not allowed to just because one sits above the other in a line. CONTRIBUTING's table says the same.
BASE = ("errors", "schema", "paper", "summaries", "validate", "model_queue")
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "errors": (),
    "schema": ("errors",),
    "paper": ("errors", "schema"),
    "summaries": ("errors", "schema", "paper"),
    "validate": ("errors",),
    "model_queue": ("errors",),
    "data": BASE,
    "models": (*BASE, "data"),
    "science": (*BASE, "data", "models"),
    "store": (*BASE, "data"),  # artifact files know the schema, never the science that fills them
    "live_analyzer": (*BASE, "data", "models", "science", "store"),
    "live": (*BASE, "data", "models", "science", "store", "live_analyzer"),
    "jobs": (*BASE, "data", "models", "science", "store", "live_analyzer", "live"),
    "__main__": ("jobs",),
}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """precompute modules imported by a module (absolute and relative, module level and inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in ("precompute", "app", "streamlit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] in ("precompute", "app", "streamlit"):
                known = _MODULES
                for a in node.names:  # "from . import schema" imports a module
                    out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return out


_MODULES = _modules()


def _group(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return ""  # the package root re-exports lazily
    if parts[1] not in MAY_IMPORT:
        raise AssertionError(f"{mod} belongs to no group; add it to MAY_IMPORT")
    return parts[1]


def _allowed(importer: str, imported: str) -> bool:
    a, b = _group(importer), _group(imported)
    return "" in (a, b) or a == b or b in MAY_IMPORT[a]


def test_imports_point_down_and_nothing_imports_streamlit_or_app():
    problems = []
    for name, path in _MODULES.items():
        for imp in _imports(name, path):
            if imp.split(".")[0] in ("app", "streamlit"):
                problems.append(f"{name} imports {imp}")
            elif not _allowed(name, imp):
                problems.append(f"{name} ({_group(name)}) imports {imp} ({_group(imp)})")
    assert problems == []


def test_the_allowed_imports_are_an_order():
    # what a group may import, it may import transitively too, and no two groups may import each other
    for group, allowed in MAY_IMPORT.items():
        for below in allowed:
            assert group not in MAY_IMPORT[below], f"{group} and {below} may import each other"
            missing = set(MAY_IMPORT[below]) - set(allowed) - {group}
            assert not missing or group == "__main__", f"{group} may import {below} but not {missing}"


def assert_acyclic(graph: dict[str, set[str]]) -> None:
    """AssertionError naming the cycle if the import graph has one."""
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_no_import_cycle():
    assert_acyclic(
        {
            name: {i for i in _imports(name, path) if i in _MODULES and i != "precompute"}
            for name, path in _MODULES.items()
            if name != "precompute"
        }
    )
    with pytest.raises(AssertionError, match="import cycle: a -> b -> a"):  # the checker can fail
        assert_acyclic({"a": {"b"}, "b": {"a"}})


def test_the_layering_test_sees_a_violation(tmp_path):
    # the checker itself must be able to fail: an upward import is reported
    assert not _allowed("precompute.models.loading", "precompute.science.cspa")
    assert not _allowed("precompute.store.reader", "precompute.science.tuned_lens")  # not above: beside
    assert not _allowed("precompute.live", "precompute.jobs.report")
    assert _allowed("precompute.jobs.report", "precompute.live")
    assert "precompute.science.cspa" in _imports("precompute.models.x", _write(tmp_path, "from ..science import cspa"))


def _write(folder: Path, text: str) -> Path:
    p = folder / "x.py"
    p.write_text(text + "\n")
    return p


def test_no_module_over_400_lines():
    big = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in list(PKG.rglob("*.py")) + list((ROOT / "app").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert big == []


def test_artifact_readme_table_is_generated_from_the_schema():
    from precompute.schema import readme_table

    text = (ROOT / "artifacts" / "README.md").read_text()
    start = text.index("-->\n", text.index("<!-- generated from precompute/schema.py")) + 4
    end = text.index("\n<!-- end of generated table -->")
    assert text[start:end] == readme_table()
    from precompute.schema import survey_table

    start = text.index("-->\n", text.index("<!-- generated from precompute/schema.py (survey_table)")) + 4
    end = text.index("\n<!-- end of generated survey table -->")
    assert text[start:end] == survey_table()


def test_field_names_are_spelled_only_in_the_schema():
    # the stored field names (templates filled in) appear as string literals nowhere else in the code
    from precompute import schema

    names = {f.name for f in schema.head_fields()} - {"loss"}
    offenders = []
    for p in list(PKG.rglob("*.py")) + list((ROOT / "app").rglob("*.py")):
        if p.name == "schema.py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{p.relative_to(ROOT)}: {node.value!r}")
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if any(t in text for t in ("_topk_", "_correct_", "delta_loss_", "kl_")):
                    offenders.append(f"{p.relative_to(ROOT)}: f-string {text!r}")
    assert offenders == []


def test_head_fields_cover_every_stored_variant():
    from precompute import schema

    names = [f.name for f in schema.head_fields(("direct_frozen", "both_unfrozen"), cspa=False)]
    assert "delta_loss_both_unfrozen" in names and "kl_direct_frozen" in names
    assert "direct_frozen_topk_ids" in names and "both_unfrozen_topk_ids" not in names
    assert not any(n.startswith("cspa") or n.endswith("_cspa") for n in names)
    assert len(names) == len(set(names))


@pytest.mark.skipif(os.environ.get("CSE_SKIP_WHEEL") == "1", reason="wheel build disabled")
def test_wheel_builds_and_imports_from_another_folder(tmp_path):
    import shutil

    src, wheel_dir, target = tmp_path / "src", tmp_path / "wheel", tmp_path / "site"
    src.mkdir()
    for name in ("precompute", "app"):  # a copy, so the build leaves nothing in the checkout
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("copy_suppression_explorer-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import precompute, precompute.science.analysis as a, precompute.store.reader as r; "
        "print(precompute.__file__); print(sorted(precompute.__all__)[:3])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert str(target) in out.splitlines()[0]
    assert "AnalysisResult" in out


def _app_modules() -> dict[str, Path]:
    app = ROOT / "app"
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in app.rglob("*.py")
        if "views" not in p.parts and p.name != "Home.py"
    }


def _app_imports(path: Path, mods) -> set[str]:
    """The app modules ``path`` imports ("from app import state" and "from app.state import url" included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for imp in names:
            parts = imp.split(".")
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in mods:
                    out.add(".".join(parts[:i]))
                    break
    return out


def _app_graph() -> dict[str, set[str]]:
    mods = _app_modules()
    return {name: _app_imports(path, mods) - {name, "app"} for name, path in mods.items()}


# app/'s layers, bottom first; each may import only itself and the layers below (the pages, app/views, sit on top)
APP_LAYERS = [
    ("app.render", "app.discovery", "app.server"),
    ("app.state",),
    (
        "app.sequence",
        "app.circuit_views",
        "app.pairs_view",
        "app.survey_data",
        "app.verdict_view",
        "app.live_model",
        "app.exports",
        "app.answer_view",
    ),
    ("app.launch",),
]


def _app_layer(mod: str) -> int:
    for i, names in enumerate(APP_LAYERS):
        if any(mod == n or mod.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{mod} belongs to no app layer; add it to APP_LAYERS")


def test_no_import_cycle_in_the_app_and_its_layers_point_down():
    """``app/`` too (pages excluded: nothing imports them): no cycle (the launcher and the state layer once
    imported each other; both now read ``app.discovery``), and each module imports only its layer and below."""
    graph = _app_graph()
    assert_acyclic(graph)
    assert "app.discovery" in graph["app.state.artifacts"] and "app.discovery" in graph["app.launch"]
    assert not any(m.startswith("app.state") for m in graph["app.launch"])
    upward = [
        f"{a} imports {b}" for a, deps in graph.items() for b in deps if a != "app" and _app_layer(b) > _app_layer(a)
    ]
    assert upward == []


def test_pages_name_no_hook_lock_or_session_key_and_link_by_name():
    """The pages talk to the model only through ``app.live_model`` (no TransformerLens, hook name or lock), to
    shared state only through ``app.state`` (no raw session key of the frame, no query parameters by hand), and
    link to other pages by name (``state.pages.link``), never by script path."""
    problems = []
    for path in sorted((ROOT / "app" / "views").glob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        for bad in (
            "torch",
            "transformer_lens",
            "threading",
            "precompute.models",
            "precompute.jobs",
            "precompute.live",
        ):
            if any(m == bad or m.startswith(bad + ".") for m in mods):
                problems.append(f"{path.name} imports {bad}")
        for needle in (
            "hook_",
            "run_with_cache",
            "run_with_hooks",
            "model_lock",
            "_lock",
            "cse_arts",
            "session_state",
            "st.query_params",
            "st.page_link",
            '"views/',
        ):
            if needle in text:
                problems.append(f"{path.name} contains {needle!r}")
    assert problems == []


def test_launcher_and_discovery_do_not_import_streamlit():
    for name in ("app.launch", "app.discovery"):
        path = _app_modules()[name]
        assert not [i for i in _imports(name, path) if i.split(".")[0] == "streamlit"], name


def _python_files(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py")]


def test_one_server_command_and_deploy_imports_no_benchmark():
    """The Streamlit command line is written once (``app.server.server_command``: the launcher, the tests, the
    benchmarks and the page walk start that), and ``deploy/`` does not import ``benchmarks/``."""
    spelled = []
    for p in _python_files("app", "tests", "benchmarks", "deploy", "precompute"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.List) and [getattr(e, "value", None) for e in node.elts[1:4]] == [
                "-m",
                "streamlit",
                "run",
            ]:
                spelled.append(str(p.relative_to(ROOT)))
            if isinstance(node, ast.FunctionDef) and node.name in ("free_port", "_free_port"):
                spelled.append(f"{p.relative_to(ROOT)}: def {node.name}")
    assert sorted(spelled) == ["app/server.py", "app/server.py: def free_port"]
    into_benchmarks = [
        str(p.relative_to(ROOT))
        for p in _python_files("deploy")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom | ast.Import)
        and any(
            n.startswith("benchmarks")
            for n in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
        )
    ]
    assert into_benchmarks == []


def test_tests_share_helpers_through_their_own_modules():
    """conftest and the test files import shared factories and references from ``tests/factories.py``,
    ``tests/references.py`` and ``tests/app_helpers.py``, never from another test file."""
    offenders = []
    for p in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1].startswith("test_"):
                offenders.append(f"{p.name} imports from {node.module}")
    assert offenders == []


def test_tier_rules_refuse_a_guess_and_name_required_skips():
    from .conftest import required_kinds, tier_of

    assert tier_of(["fast"], "model", set(), "t") == "fast"  # a test's own marker wins over its file's
    assert tier_of([], "model", {"toy"}, "t") == "model"
    with pytest.raises(pytest.UsageError, match="no test tier"):
        tier_of([], None, set(), "t")
    with pytest.raises(pytest.UsageError, match="fast tier but uses"):
        tier_of([], "fast", {"toy", "tmp_path"}, "t")
    assert required_kinds("model", "Skipped: WordNet's database is not installed") == {"model", "wordnet"}
    assert required_kinds("browser", "Debian chromium is not installed") == {"browser"}


def _figure_lookup(node: ast.AST, parent: ast.AST | None) -> bool:
    """A string naming one of the paper's figures: ``FIGURE["…"]``, ``paper_figures(…)["…"]``, ``Figure("…", …)``."""
    if isinstance(parent, ast.Subscript):
        target = ast.unparse(parent.value)
        return target.endswith("FIGURE") or "paper_figures(" in target
    return isinstance(parent, ast.Call) and ast.unparse(parent.func).endswith("Figure")


def test_summary_keys_are_spelled_only_in_the_summaries_module():
    """A head summary's typed keys (``precompute/summaries.py``) appear as string literals nowhere else in the code
    (readers use the dataclasses' fields; ``paper.Figure.source`` names them as "section.key"). A paper figure's own
    key (``paper.FIGURE["explained_kl"]``) is another name and is left out, as are the generic counts."""
    import dataclasses

    from precompute import summaries

    names = {
        f.name
        for cls in (summaries.CSPASummary, summaries.RankSummary, summaries.OVDynamicSummary)
        for f in dataclasses.fields(cls)
    } - {"extra", "n_tokens", "n_pairs"}
    offenders = []
    for p in list(PKG.rglob("*.py")) + list((ROOT / "app").rglob("*.py")):
        if p.name == "summaries.py":
            continue
        tree = ast.parse(p.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            if literal and not _figure_lookup(node, parents.get(node)):
                offenders.append(f"{p.relative_to(ROOT)}: {node.value!r}")
    assert offenders == []


def test_every_page_is_a_main_function_over_view_modules():
    """Each page in ``app/views`` is imports, constants and functions, and one statement: ``main()`` at the bottom
    (CONTRIBUTING); no page imports torch (checked above) and none spells a head as f"{h[0]}.{h[1]}" (``Head.name``)."""
    for path in sorted((ROOT / "app" / "views").glob("*.py")):
        tree = ast.parse(path.read_text())
        statements = [
            n
            for n in tree.body
            if not isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef)
            and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in n.targets))
        ]
        assert [ast.unparse(n) for n in statements] == ["main()"], path.name
        assert "[0]}.{" not in path.read_text(), path.name
