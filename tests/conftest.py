"""The root conftest: it only registers the shared fixtures (tests/fixtures.py). pytest accepts
``pytest_plugins`` in the root conftest alone, and tests/test_layout.py checks that this stays the one."""

pytest_plugins = ["tests.fixtures"]
