"""`python -m harness`: see harness.cli."""

import sys

from harness import bare, boundscheck

boundscheck.reexec(sys.argv[1:])        # --boundscheck: this command, in a bounds-checked build
bare.reexec(sys.argv[1:])              # bench: its throughput table in the bare build

from harness.cli import main  # noqa: E402

sys.exit(main())
