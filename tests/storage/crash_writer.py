"""A writer for the crash tests: it is killed with SIGKILL while it writes.

    python crash_writer.py BACKEND PATH kv|log [HOT_KEYS]

``kv``: batch n (n = 1, 2, ..., continuing after the last batch stored) puts keys
``b{n:06d}/00`` .. ``/09``, overwrites ``counter`` with ``n`` and sets meta ``last_batch`` to
``n``, all in one ``apply(sync=True)``.
``log``: call n persists entry n (term n) and hard state (term n, commit n - 1).
After each call returns, ``n`` is printed and flushed: a printed number is an acknowledgement.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from exapyte.protocol.raft.core import raft_hard_state
from exapyte.protocol.types import Entry  # noqa: E402
from exapyte.storage import Put, open_storage  # noqa: E402

KEYS_PER_BATCH = 10
PAYLOAD = bytes(range(256)) * 2


def main() -> None:
    backend, path, mode = sys.argv[1:4]
    options = {"hot_keys": int(sys.argv[4])} if len(sys.argv) > 4 else {}
    store = open_storage(backend, path, **options)
    if mode == "kv":
        counter = store.get("counter")  # resume after the batches a previous run left
        n = 0 if counter is None else int(counter.value)
        while True:
            n += 1
            ops = [Put(f"b{n:06d}/{i:02d}", PAYLOAD) for i in range(KEYS_PER_BATCH)]
            ops.append(Put("counter", str(n).encode()))
            store.apply(ops, {"last_batch": str(n).encode()}, sync=True)
            print(n, flush=True)
    elif mode == "log":
        n = store.last_index()
        while True:
            n += 1
            store.persist(raft_hard_state(n, "n1", n - 1), [Entry(n, n, 0, PAYLOAD)], sync=True)
            print(n, flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
