"""The ``plughub`` command line: list, inspect, export and call plugins; scaffold and test them.

Commands live in modules by concept (``_catalog``: list/info/tools, ``_invoke``, ``_scaffold``:
new, ``_check``: test); ``_common`` holds the lazily built host and the exit-code mapping.
"""

from ._app import app, main

__all__ = ["app", "main"]
