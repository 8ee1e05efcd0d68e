"""The known bug token-after-truncate in the simulator: a write acknowledged at append by a
leader that is then cut off is truncated by the next leader, and the session that wrote it still
holds a token ``[term, index]`` naming it. With the index-only check a replica "at" that index
serves the session a state without its write (read-your-writes, as the harness's level checkers
judge it); with the term check (``ack-before-fsync`` has the same acknowledgements at append) the
same read is refused with ``session_lost``. Without either bug the schedule is clean.

Seed 3 of the default spec is the clearest of the first catching seeds (2, 3 and 4): client 3's
write of ``k2`` is acknowledged at ``[2, 53]`` and truncated; its next session read is served by
a replica whose index 53 holds an entry of term 3.
"""

from __future__ import annotations

import re

from exapyte.history import iter_jsonl
from exapyte.sim import SimSpec, run_seed
from tests.mutants.mutants import MUTANTS_BY_NAME
from tests.mutants.run import hunt

SEED = 3


def _lost_writes(detail: str) -> list[str]:
    """``write k = v`` of each write a lost-write verdict names (as the level checkers name it)."""
    return [f"write {key} = {value}" for key, value in re.findall(r"write (k\d+)='(v\d+)'", detail)]


def test_the_index_only_check_serves_a_session_its_truncated_write() -> None:
    result = run_seed(SimSpec(seed=SEED, bugs=("token-after-truncate",)))
    assert result.check == "lost-write", (result.check, result.detail)  # the ack at append's
    assert result.counters["session_tokens_reused"] >= 1
    assert result.counters["reads_session_lost"] == 0
    lost = _lost_writes(result.detail)
    served = [cause for name, cause in result.level_violations if name == "read-your-writes"
              and "does not hold the session's update" in cause and any(w in cause for w in lost)]
    assert served, result.level_violations  # a read "at" a lost write's index, without it


def test_the_term_check_refuses_the_same_read_with_session_lost() -> None:
    result = run_seed(SimSpec(seed=SEED, bugs=("ack-before-fsync",)), keep_history=True)
    assert not result.ok  # the acknowledgements at append still lose writes
    assert result.counters["session_tokens_reused"] == 0
    assert result.counters["reads_session_lost"] >= 1
    refused = [e for _, e in iter_jsonl(result.history_jsonl)
               if e.is_client and e.type == "fail" and e.error == "session_lost"]
    assert refused and all(e.level == "session" for e in refused)
    lost = _lost_writes(result.detail)
    assert not [cause for name, cause in result.level_violations if name == "read-your-writes"
                and "does not hold the session's update" in cause and any(w in cause for w in lost)]


def test_the_schedule_is_clean_without_the_bug() -> None:
    result = run_seed(SimSpec(seed=SEED))
    assert result.ok, (result.check, result.detail)
    assert result.counters["session_tokens_reused"] == 0 and result.counters["reads_session_lost"] == 0


def test_the_mutant_hunt_waits_for_the_index_only_checks_finding() -> None:
    outcome = hunt(MUTANTS_BY_NAME["token-after-truncate"], 5)
    assert outcome.caught and outcome.seed == 2, (outcome.seed, outcome.check)
    assert outcome.check.startswith("levels: read-your-writes behind a truncated token")
