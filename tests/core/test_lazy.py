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
    with pytest.raises(AttributeError, match="module 'consortium' has no attribute 'nope'"):
        getattr_("nope")
