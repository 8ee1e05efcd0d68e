"""exapyte: a distributed key-value platform with pluggable consensus, and the harness that checks it."""

__version__ = "0.1.0"
