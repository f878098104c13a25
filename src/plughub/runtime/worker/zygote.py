"""``python -m plughub.runtime.worker.zygote FD``: the warm-start zygote (see ``_zygote``)."""

import sys

from ._zygote import serve

serve(int(sys.argv[1]))
