"""Lazy package attributes: imported on first read, then kept; unknown names still fail."""

from __future__ import annotations

import subprocess
import sys

import pytest

from consortium.core.lazy import lazy_exports


def test_a_name_is_imported_on_first_read_and_kept(tmp_path, monkeypatch):
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from consortium.core.lazy import lazy_exports\n"
        "__getattr__ = lazy_exports(__name__, {'VALUE': '.heavy', 'sqrt': 'math'})\n"
    )
    (pkg / "heavy.py").write_text(
        "import sys\nsys.heavy_loads = getattr(sys, 'heavy_loads', 0) + 1\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code = (
        "import sys, lazypkg\n"
        "assert 'lazypkg.heavy' not in sys.modules\n"
        "assert lazypkg.VALUE == 42 and lazypkg.VALUE == 42 and sys.heavy_loads == 1\n"
        "assert 'VALUE' in vars(lazypkg)\n"
        "from lazypkg import sqrt\n"
        "assert sqrt(9) == 3\n"
    )
    env_path = f"{tmp_path}:{':'.join(sys.path)}"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path})


def test_an_unknown_name_is_an_attribute_error():
    getattr_ = lazy_exports("consortium", {})
    with pytest.raises(AttributeError, match=r"^module 'consortium' has no attribute 'nope'$"):
        getattr_("nope")


def test_in_process_relative_and_absolute_exports_are_imported_once_and_kept(tmp_path, monkeypatch):
    """The same as above in this process (where mutation testing can see it)."""
    pkg = tmp_path / "lazypkg2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "heavy.py").write_text("LOADS = []\nLOADS.append(1)\nVALUE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("lazypkg2", "lazypkg2.heavy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import lazypkg2

    getattr_ = lazy_exports("lazypkg2", {"VALUE": ".heavy", "sqrt": "math"})
    assert "lazypkg2.heavy" not in sys.modules
    value = getattr_("VALUE")
    heavy = sys.modules["lazypkg2.heavy"]
    assert value is heavy.VALUE and vars(lazypkg2)["VALUE"] is value
    assert getattr_("VALUE") is value and heavy.LOADS == [1]
    import math

    assert getattr_("sqrt") is math.sqrt and vars(lazypkg2)["sqrt"] is math.sqrt
    with pytest.raises(AttributeError, match=r"^module 'lazypkg2' has no attribute 'cos'$"):
        getattr_("cos")
    assert "cos" not in vars(lazypkg2)
    for name in ("lazypkg2.heavy", "lazypkg2"):
        sys.modules.pop(name, None)
