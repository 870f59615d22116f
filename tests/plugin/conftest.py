"""Fixtures for the handler tests: a copy of a package `careplane plugin build` wrote
(CAREPLANE_PLUGIN_DIR), with the ids the build would resolve from a live target written
into its data file, read by the real SDK (render_to_string, get_cache) as inside Canvas."""

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

PACKAGE = Path(os.environ["CAREPLANE_PLUGIN_DIR"]).resolve()
NAME = PACKAGE.name

sys.path.insert(0, str(PACKAGE.parent))


@pytest.fixture
def handler():
    """The handler module, imported from the package as the plugin runner names it."""
    module = importlib.import_module(f"{NAME}.handlers.careplane_rules")
    # What the plugin runner's sandbox marks plugin modules with: the SDK's plugin-only
    # helpers (render_to_string, get_cache) look for it up the stack.
    module.__is_plugin__ = True
    return module


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A private copy of the package; `ids(teams=..., groups=...)` sets resolved ids."""
    plugins = tmp_path / "plugins"
    shutil.copytree(PACKAGE, plugins / NAME)
    import canvas_sdk.utils.plugins as sdk_plugins

    monkeypatch.setattr(sdk_plugins, "PLUGIN_DIRECTORY", str(plugins))
    data_file = plugins / NAME / "careplane_rules.json"

    class Package:
        rules = json.loads(data_file.read_text())

        def ids(self, teams=None, groups=None):
            for rule in self.rules["routing"]:
                team = rule["set"].get("team")
                if team and teams and team["name"] in teams:
                    team["groupId"] = teams[team["name"]]
            for group in self.rules["groups"]:
                if groups and group["name"] in groups:
                    group["groupId"] = groups[group["name"]]
            data_file.write_text(json.dumps(self.rules))

        def edit(self, change):
            change(self.rules)
            data_file.write_text(json.dumps(self.rules))

    return Package()
