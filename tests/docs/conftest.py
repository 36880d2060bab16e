"""Documentation pages whose code blocks run as tests: the blocks of a page, in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, in the order a reader meets them."""
    return FENCE.findall((DOCS / page).read_text())


@pytest.fixture
def run_page(tmp_path, monkeypatch):
    """Run every Python block of a page in one namespace, from a fresh working folder, as a
    reader pasting them into one session would; returns the namespace."""

    def run(page: str) -> dict:
        monkeypatch.chdir(tmp_path)
        namespace: dict = {"__name__": "__doc_page__"}
        blocks = python_blocks(page)
        assert blocks, f"{page} has no python blocks"
        for i, block in enumerate(blocks, 1):
            code = compile(block, f"{page} block {i}", "exec")
            exec(code, namespace)  # the page is ours: running it is the test
        return namespace

    return run
