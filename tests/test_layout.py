"""The test suite's own layout (issue 19): shared fixtures live in one module, tests/fixtures.py, registered
once by the root conftest with ``pytest_plugins``; plain helpers live in helper modules; and no file under
tests/ imports a conftest or a test module. Importing one runs it twice under two names (pytest's and the
importer's), re-registers its fixtures where they were not meant to be, and collects imported tests again.

Checked statically with ``ast`` over every ``.py`` file under tests/, so a new file is covered unedited.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES_MODULE = "tests.fixtures"
FIXTURES_FILE = TESTS / "fixtures.py"

#: Fixtures named like a shared one but defined nearer on purpose; pytest uses the nearer definition there.
#: Add one here only with the reason it differs; otherwise use the shared fixture.
LOCAL_OVERRIDES = {
    ("tests/client/conftest.py", "client"): "a remote api.client.Client on the live server, not a TestClient",
    ("tests/service/test_api.py", "client"): "the REST tests run on both stores (settings follows db_url)",
    ("tests/service/test_static_assets.py", "client"): "the embedded executor on the data dir's default store",
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _is_test_or_conftest(name: str) -> bool:
    """``name`` is a dotted module name; a part named conftest or test_* makes it a test module or conftest."""
    return any(part == "conftest" or part.startswith("test_") for part in name.split("."))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module ``from ... import`` reads from, with relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def forbidden_imports(source: str, module: str = "tests.example", *, is_package: bool = False) -> list[str]:
    """The conftests and test modules that ``source`` (the text of module ``module``) imports, each as
    ``line N: dotted.name``: plain and ``from`` imports, relative ones, and importlib/__import__ calls with a
    literal name."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = _absolute(node, module, is_package)
            names = [origin] + [f"{origin}.{alias.name}".lstrip(".") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            if _is_test_or_conftest(name):
                found.append(f"line {node.lineno}: {name}")
                break
    return found


def _python_files() -> Iterator[Path]:
    yield from sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
        isinstance(target, ast.Name) and target.id == "fixture")


def fixtures_defined(source: str) -> list[str]:
    """Names of the functions in ``source`` decorated with ``pytest.fixture`` (bare or called)."""
    return [node.name for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(map(_is_fixture, node.decorator_list))]


def _pytest_plugins(source: str) -> object:
    """The value ``pytest_plugins`` is assigned at module level in ``source`` (``None`` when it is not)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytest_plugins"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _is_test_file(path: Path) -> bool:
    return path.name == "conftest.py" or path.name.startswith("test_")


# ----------------------------------------------------------------------------------------------
# The checker itself: it flags what it must and nothing else
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "from tests.service.conftest import pg_schema_url\n",
    "from tests.service.test_api import RecordingDispatcher\n",
    "from tests.service import test_api\n",
    "from tests.trust import conftest\n",
    "import tests.service.conftest\n",
    "import tests.trust.test_bounded_work as tbw\n",
    "from conftest import make_app\n",
    "from dash_helpers import x\nfrom test_dashboard_static import insert\n",
    "from . import conftest\n",
    "from .test_api import RecordingDispatcher\n",
    "from ..service.conftest import PG_HOST\n",
    "import importlib\nimportlib.import_module('tests.service.conftest')\n",
    "def f():\n    from tests.service.test_api import RecordingDispatcher\n",
])
def test_the_checker_flags_every_form_of_importing_a_test_module_or_conftest(source: str) -> None:
    found = forbidden_imports(source, "tests.trust.test_example")
    assert len(found) == 1, (source, found)
    assert "conftest" in found[0] or "test_" in found[0].split(": ")[1]


@pytest.mark.parametrize("source", [
    "from tests.live import running_server\n",
    "from tests.services import pg_schema_url, require_redis\n",
    "from tests.apps import RecordingDispatcher\n",
    "from tests.trust.hostile import send_hostile\n",
    "from dash_helpers import CHROMIUM_ARGS\n",
    "from . import hostile\n",
    "import pytest\nimport tests\n",
    "from api.store import repo\nfrom pruning_core.testing_utils import x\n",
])
def test_the_checker_allows_helper_modules(source: str) -> None:
    assert forbidden_imports(source, "tests.trust.test_example") == []


def test_relative_imports_resolve_against_the_importing_module() -> None:
    assert forbidden_imports("from .conftest import x\n", "tests.service", is_package=True) == [
        "line 1: tests.service.conftest"]
    assert forbidden_imports("from .. import test_levels\n", "tests.trust.hostile") == ["line 1: tests.test_levels"]


def test_fixture_definitions_are_found_bare_called_and_imported() -> None:
    source = ("import pytest\nfrom pytest import fixture\n@pytest.fixture\ndef a(): ...\n"
              "@pytest.fixture(scope='session')\ndef b(): ...\n@fixture\ndef c(): ...\ndef d(): ...\n")
    assert fixtures_defined(source) == ["a", "b", "c"]


# ----------------------------------------------------------------------------------------------
# The suite as it is
# ----------------------------------------------------------------------------------------------


def test_no_file_under_tests_imports_a_conftest_or_a_test_module() -> None:
    offences = []
    for path in _python_files():
        found = forbidden_imports(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")
        offences += [f"{path.relative_to(ROOT)} {hit}" for hit in found]
    assert not offences, (
        "a test module or conftest is imported (move the shared fixture to tests/fixtures.py, the helper to a "
        "helper module such as tests/services.py or tests/apps.py, and import that):\n" + "\n".join(offences))


def test_the_shared_fixtures_are_registered_once_by_the_root_conftest() -> None:
    declared = {str(p.relative_to(ROOT)): value for p in _python_files()
                if (value := _pytest_plugins(p.read_text())) is not None}
    assert declared == {"tests/conftest.py": [FIXTURES_MODULE]}, (
        f"pytest_plugins must be declared only in tests/conftest.py, as [{FIXTURES_MODULE!r}]; found {declared}")
    assert FIXTURES_FILE.is_file(), f"{FIXTURES_FILE} is missing"


def test_fixtures_live_in_the_fixtures_module_conftests_or_test_modules() -> None:
    """A fixture in a helper module is registered wherever it is imported: the hidden coupling this removes."""
    misplaced = [f"{p.relative_to(ROOT)}: {', '.join(names)}" for p in _python_files()
                 if p != FIXTURES_FILE and not _is_test_file(p) and (names := fixtures_defined(p.read_text()))]
    assert not misplaced, "fixtures defined in helper modules (move them to tests/fixtures.py):\n" + "\n".join(
        misplaced)


def test_a_shared_fixture_is_redefined_only_where_listed() -> None:
    shared = set(fixtures_defined(FIXTURES_FILE.read_text()))
    assert {"pg_database", "db_url", "settings", "session_factory", "redis_url", "sqlite_settings", "client",
            "trained_digits_state", "trained_digits"} <= shared
    redefined = {(str(p.relative_to(ROOT)), name) for p in _python_files() if p != FIXTURES_FILE
                 for name in fixtures_defined(p.read_text()) if name in shared}
    unlisted = sorted(redefined - LOCAL_OVERRIDES.keys())
    assert not unlisted, (
        f"{unlisted} redefine fixtures of tests/fixtures.py: use the shared one, or give yours another name "
        "(or, if it must shadow it, add it to LOCAL_OVERRIDES in tests/test_layout.py with the reason)")
    stale = sorted(LOCAL_OVERRIDES.keys() - redefined)
    assert not stale, f"LOCAL_OVERRIDES lists {stale}, which no longer redefine a shared fixture: remove them"
