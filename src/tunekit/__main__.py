"""`python -m tunekit` runs the CLI."""

from tunekit.cli.main import main

raise SystemExit(main())
