"""Dependencies point one way: entry points → services → models and shoptet_api, read from every module's imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("config", "shoptet_api", "installations", "addon", "webhooks", "sync", "notifications", "rollups")
# Modules that the outside world or the framework calls: they may import anything below them.
ENTRY_POINTS = {"views", "admin", "api", "urls", "api_urls", "tasks", "apps", "dashboard", "celery", "webhook_handlers"}
# The config modules every layer may use: they import no app.
CONFIG_BASE = (
    "config.crypto",
    "config.retries",
    "config.logs",
    "config.database",
    "config.throttling",
)
# Known and left: the settings toggles start their follow-up work by enqueueing the tasks directly.
TOLERATED = {("sync.toggles", "sync.tasks"), ("sync.toggles", "webhooks.tasks")}


def modules() -> Iterator[tuple[str, Path]]:
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path


def imported(path: Path) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in APPS}


def is_entry_point(module: str) -> bool:
    parts = module.split(".")
    return "management" in parts or parts[-1] in ENTRY_POINTS


def names_entry_point(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 1 and (parts[1] in ENTRY_POINTS or parts[1] == "management")


def forbidden(module: str, name: str) -> str | None:
    """Why `module` may not import `name`, or None when the import points down."""
    app, target = module.split(".")[0], name.split(".")[0]
    if app == "shoptet_api" and target not in ("shoptet_api", "config"):
        return "shoptet_api imports no app"
    if module.startswith(CONFIG_BASE) and target != "config":
        return "the base config modules import no app"
    if module.endswith(".models") and target not in ("config", app) and name.split(".")[1:2] != ["models"]:
        return "models import only models"
    if not is_entry_point(module) and names_entry_point(name) and target != "config":
        if (module, ".".join(name.split(".")[:2])) not in TOLERATED:
            return "services do not import views, tasks, admin or API"
    return None


def test_every_import_points_down() -> None:
    found = [
        f"{module} → {name}: {reason}"
        for module, path in modules()
        for name in sorted(imported(path))
        if (reason := forbidden(module, name))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "name", "wrong"),
    [
        ("shoptet_api.client", "installations.models", True),
        ("shoptet_api.client", "config.logs", False),
        ("config.crypto", "installations.models", True),
        ("sync.jobs", "sync.tasks", True),
        ("sync.tasks", "sync.jobs", False),
        ("webhooks.models", "installations.services", True),
        ("webhooks.models", "installations.models", False),
    ],
)
def test_the_rules_tell_a_wrong_direction(module: str, name: str, wrong: bool) -> None:
    assert (forbidden(module, name) is not None) is wrong
