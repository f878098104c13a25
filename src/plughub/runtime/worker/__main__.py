"""``python -m plughub.runtime.worker IN_FD OUT_FD``: a worker process (see ``_child``)."""

from ._child import main

main()
