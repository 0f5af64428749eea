"""``python -m mae_core.cli``: the ``mae-core`` command."""
import sys

from . import main

sys.exit(main())
