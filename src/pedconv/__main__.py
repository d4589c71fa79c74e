"""``python -m pedconv``: the same command line as the ``pedconv`` script."""

from .cli import main

raise SystemExit(main())
