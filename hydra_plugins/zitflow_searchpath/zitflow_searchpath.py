"""Hydra search-path plugin: recipe packs named in ``ZITFLOW_RECIPE_PATH`` join every run.

``ZITFLOW_RECIPE_PATH=/packs/shop:/packs/team`` (``os.pathsep``-separated) appends each folder
as a config root, so its ``recipe/*.yaml`` files are selectable with ``recipe=NAME``. Unlike
``hydra.searchpath=[...]`` on the command line, it does not replace other search paths.
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ZitflowSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for folder in os.environ.get("ZITFLOW_RECIPE_PATH", "").split(os.pathsep):
            if folder.strip():
                search_path.append(provider="zitflow-recipe-path", path=f"file://{os.path.abspath(folder)}")
