"""Every limit exapyte enforces, named in one place.

Units are in the name (``_bytes``, ``_ms``, ``_ticks``, ``_count``). Changing a value here changes
it everywhere; nothing else in the code base hard-codes these numbers.
"""

from __future__ import annotations

# --- wire -------------------------------------------------------------------------------------
PROTOCOL_VERSION = 1
FRAME_BYTES_MAX = 16 * 1024 * 1024  # a frame larger than this is dropped before decoding
# Replication "optimized": peer frames to other regions of at least this size go compressed.
PEER_PACK_BYTES_MIN = 1024
KEY_BYTES_MAX = 1024  # a user key (and a scan bound), UTF-8 encoded
VALUE_BYTES_MAX = 1024 * 1024  # a user value (and a cas expected value)
SCAN_LIMIT_MAX = 10_000  # records one scan may return

# --- client requests (checked by exapyte.runtime.service.validate_request) ---------------------
CLIENT_ID_BYTES_MAX = 128  # a request's client_id, UTF-8 encoded; it names a session record
SEQ_MAX = 2**63 - 1  # a request's seq (a signed 64-bit integer)
SESSION_INDEX_MAX = 2**63 - 1  # a request's session token (a log index, and the term of its entry)
TERM_RUNS_MAX = 1_024  # term changes along the applied log a state machine remembers (kv.py)
GROUP_NAME_BYTES_MAX = 64  # a request's replica group name, UTF-8 encoded
GROUP_MEMBERS_MAX = 64  # node ids in a group configuration carried by an admin request
NODE_ID_BYTES_MAX = 64  # a node id named by an admin request (as long as a config id may be)
CLOCK_SHIFT_MS_MAX = 3_600_000  # |shift_ms| of one clock fault
CLOCK_RATE_MAX = 100.0  # a clock fault's rate lies in (0, CLOCK_RATE_MAX]
ECHO_CHARS_MAX = 40  # characters of a refused value quoted back in an error message

# --- ZeroMQ -----------------------------------------------------------------------------------
ZMQ_SNDHWM_MESSAGES = 10_000  # queued outgoing messages per peer before sends fail
ZMQ_RCVHWM_MESSAGES = 10_000
ZMQ_SNDTIMEO_MS = 0  # ROUTER/DEALER sends never block: a full queue drops (protocols tolerate loss)
ZMQ_LINGER_MS = 0  # unsent messages are discarded at close
ZMQ_RECONNECT_IVL_MS = 50
ZMQ_RECONNECT_IVL_MAX_MS = 1_000

# --- storage ----------------------------------------------------------------------------------
STORAGE_BATCH_OPS_MAX = 10_000  # ops in one atomic batch
TIERED_HOT_KEYS_DEFAULT = 10_000  # records the tiered store keeps in memory by default
META_NAME_BYTES_MAX = 256  # a state-machine meta name, UTF-8 encoded
META_VALUE_BYTES_MAX = 256 * 1024 * 1024  # a meta value (the client-session table can be large)
SQLITE_BUSY_TIMEOUT_MS = 5_000  # how long SQLite waits for a lock held by another connection
WRITE_BEHIND_OPS_MAX = 2_048  # applied writes a replica's state machine holds before storing them
WRITE_BEHIND_IDLE_OPS = 256  # pending writes an idle replica stores at once (else once a tick)
assert 2 * WRITE_BEHIND_OPS_MAX <= STORAGE_BATCH_OPS_MAX  # a flush is one storage batch
SQLITE_CACHE_KIB = 65_536  # SQLite's page cache per connection (a random-key working set stays in it)
SQLITE_PAGE_BYTES = 2_048  # page size of a new SQLite file (see exapyte/storage/sqlite.py)
SQLITE_WAL_CHECKPOINT_PAGES = 4_000  # WAL pages before an automatic checkpoint (8 MiB at 2 KiB pages)

# --- runtime ----------------------------------------------------------------------------------
TICK_MS_DEFAULT = 10  # one protocol tick
CLIENT_TIMEOUT_MS_DEFAULT = 2_000
CLIENT_TIMEOUT_S_MAX = 600.0  # the longest deadline a client call accepts
CLIENT_RETRIES_DEFAULT = 3
PENDING_REQUESTS_MAX = 100_000  # client requests a node holds while they are replicated
SESSION_REPLIES_MAX = 100_000  # client sessions remembered for exactly-once retries

# --- consensus --------------------------------------------------------------------------------
RAFT_ELECTION_TIMEOUT_TICKS_DEFAULT = 10  # randomized per election in [T, 2T)
RAFT_HEARTBEAT_TICKS_DEFAULT = 1
RAFT_MAX_INFLIGHT_MSGS_DEFAULT = 256  # unacknowledged append messages per follower (pipelining)
RAFT_MAX_ENTRIES_PER_MSG_DEFAULT = 512  # entries batched into one append message
RAFT_MAX_BYTES_PER_MSG_DEFAULT = 1024 * 1024  # payload bytes batched into one append message
RAFT_SNAPSHOT_CHUNK_BYTES_DEFAULT = 1024 * 1024  # snapshot bytes per InstallSnapshot message
RAFT_SNAPSHOT_BYTES_MAX = 4 * 1024 * 1024 * 1024  # a follower refuses a larger snapshot
RAFT_REPLICATE_STALL_HEARTBEATS = 3  # heartbeat answers without ack progress before re-probing
# Terms and indexes are stored as signed 64-bit integers (SQLite INTEGER, msgpack) and grow by one
# per election or entry: a peer message carrying a larger one is dropped as malformed.
RAFT_TERM_INDEX_MAX = 2**62
RAFT_READ_TIMEOUT_ELECTIONS = 1  # a leader fails a read not confirmed within this many timeouts
READ_HELD_ELECTIONS_MAX = 3  # a replica fails a read its core has neither answered nor failed

# --- distribution (exapyte/distribution/) -------------------------------------------------------
VIRTUAL_NODES_DEFAULT = 1024  # ring points per node: arc noise ~1/sqrt(V) = 3% (docs/distribution.md)
PLACEMENT_LOAD_FACTOR = 1.1  # a node holds at most ceil(1.1 x the mean) shard replicas
CONTROL_COMMANDS_MAX = 4096  # control-plane commands in one ControlOp (the founding batch is the largest)
SHARDS_MAX = 1024  # shards of one strategy (per region for the hierarchical one)
