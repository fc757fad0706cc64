"""The `tunekit` command line."""
