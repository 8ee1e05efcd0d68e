"""Deliberately broken variants of the Raft core and of the replica host, and the runner that
proves the simulator catches every one of them (``make mutants``, ``python -m tests.mutants``)."""
