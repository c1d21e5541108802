"""`python -m harness`: see harness.cli."""

import sys

from harness.boundscheck import reexec

reexec(sys.argv[1:])                    # --boundscheck: this command, in a bounds-checked build

from harness.cli import main  # noqa: E402

sys.exit(main())
