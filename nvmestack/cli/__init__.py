"""The nvmestack command line."""
