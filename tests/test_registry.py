"""The one registry convention: entries register in their own module, the package loads on first lookup, and
each entry is stamped with its name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from reidx.errors import ReidxError
from reidx.registry import Registry

ENTRY = """
from {package} import KINDS


@KINDS.register("{name}")
class Entry:
    pass
"""


def test_a_registry_imports_its_package_on_first_lookup_and_stamps_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "plugins_for_test"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"from reidx.registry import Registry\nKINDS = Registry('widget', {package.name!r})\n"
    )
    for name in ("beta", "alpha"):
        (package / f"{name}.py").write_text(ENTRY.format(package=package.name, name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = __import__(package.name).KINDS
    assert f"{package.name}.alpha" not in sys.modules  # nothing loads before a lookup
    assert registry.names() == ["alpha", "beta"]
    assert registry.get("beta").name == "beta" and registry.get("beta").__module__ == f"{package.name}.beta"
    with pytest.raises(ReidxError, match="^unknown widget 'gamma' — use one of alpha, beta$"):
        registry.get("gamma")
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        registry.register("alpha")(type("Other", (), {}))
    for module in [key for key in sys.modules if key.startswith(package.name)]:
        del sys.modules[module]
