"""The ``egress-rules`` command line."""
