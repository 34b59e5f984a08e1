"""``python -m paygentic_costs.cli`` is the ``paygentic-costs`` command."""

import sys

from . import main

sys.exit(main())
