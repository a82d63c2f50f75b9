//! The Lua scripts that make a step atomic on the Redis side.

use std::sync::LazyLock;

use redis::Script;

/// Enqueue: KEYS job, stream; ARGV id, endpoint, model, request, now, capacity.
/// Returns 1 (queued), 0 (the stream holds `capacity` jobs already), -1 (the id exists).
pub static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'endpoint', ARGV[2], 'model', ARGV[3],
  'request', ARGV[4], 'state', 'queued', 'attempts', 0, 'created', ARGV[5])
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
return 1
",
    )
});

/// Complete, exactly once: KEYS result, job, stream; ARGV result, ttl seconds, state, worker,
/// now, group, entry id (empty: none to acknowledge), job id, warnings JSON, error text.
/// The result is written only if none is there; the record is updated, kept `ttl`, and the id
/// published only then (and counted in `sumi:stats` by state). The stream entry is acknowledged and deleted either way. Returns 1
/// when this call stored the result, 0 when one was there already (this one is discarded).
pub static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
if stored then
  redis.call('HSET', KEYS[2], 'state', ARGV[3], 'finished', ARGV[5], 'warnings', ARGV[9],
    'error', ARGV[10])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'worker', ARGV[4]) end
  redis.call('HDEL', KEYS[2], 'request', 'preview')
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('PUBLISH', 'sumi:done', ARGV[8])
  redis.call('HINCRBY', 'sumi:stats', 'jobs_' .. ARGV[3], 1)
end
if ARGV[7] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[6], ARGV[7])
  redis.call('XDEL', KEYS[3], ARGV[7])
end
if stored then return 1 else return 0 end
",
    )
});

/// Start: KEYS job, result; ARGV worker, now. Counts a delivery and marks the job running
/// unless it has a result already. Returns `{attempts so far, previous worker, endpoint,
/// request}`, or `{-1}` (finished: skip it), or `{-2}` (no such record: it expired or was never
/// written).
pub static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-2} end
local prev = redis.call('HGET', KEYS[1], 'worker') or ''
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'started', ARGV[2])
redis.call('HDEL', KEYS[1], 'progress', 'preview')
local job = redis.call('HMGET', KEYS[1], 'endpoint', 'request')
return {n, prev, job[1] or '', job[2] or ''}
",
    )
});
