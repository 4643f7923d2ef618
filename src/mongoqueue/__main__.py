"""``python -m mongoqueue``: the command line (extra ``cli``)."""

from .cli import main

raise SystemExit(main())
