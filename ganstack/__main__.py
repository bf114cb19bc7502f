"""``python -m ganstack`` runs the CLI (as torchrun does with ``-m ganstack``)."""

import sys

from ganstack.cli.main import main

sys.exit(main())
