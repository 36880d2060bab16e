"""``python -m consortium``: the ``consortium`` command."""

from consortium.cli import console_main

console_main()
