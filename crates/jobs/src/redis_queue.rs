//! The Redis Streams backend: one stream per queue read through one consumer group.
//!
//! Keys (one hash tag per queue, so a cluster keeps them in one slot):
//! - `jobs:{<name>}:stream` — the jobs, fields `id`, `p` (payload), `a` (deliveries before
//!   this entry), `e` (first enqueue, ms); group `workers`. A delivered entry sits in the
//!   group's pending list (PEL) until acked; `XAUTOCLAIM` hands entries idle longer than
//!   the visibility timeout to the next consumer.
//! - `jobs:{<name>}:ids` — hash, job id → entry id (or `delayed`) while the job is queued:
//!   the idempotency check on enqueue.
//! - `jobs:{<name>}:delayed` — sorted set, job id scored by the ms it is due again after a
//!   nack; `:held` and `:meta` hold its payload and `attempts:enqueued_ms` meanwhile.
//!   Due jobs move back to the stream at the start of every reserve.
//! - `jobs:{<name>}:dead` — the dead-letter stream, trimmed to `max_dead`.
//! - `jobs:{<name>}:prune` — when the next sweep of quiet consumers is due (ms).
//!
//! Consumers that died are removed from the group once they hold no entry (theirs were
//! taken over) and have been quiet past the visibility timeout: checked at every
//! takeover and at most once per visibility timeout at any reserve.
//!
//! Every state change is one Lua script, so it is atomic on the server, and every script
//! reads the server's clock (`TIME`), so consumers on different machines agree on leases.
//! An ack is `XACK` + `XDEL`: the stream holds only unfinished jobs, which is what bounds
//! it (`max_depth`). This module must never remove a job from the PEL except by ack, by a
//! nack of its current holder, or by dead-lettering.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::error::{JobsError, bounded};
use crate::{
    Acked, DeadJob, Delivery, Enqueued, NackDecision, Nacked, NewJob, Queue, QueueConfig,
    QueueStats, Receipt,
};

/// The consumer group every worker of a queue joins.
const GROUP: &str = "workers";

/// Due delayed jobs moved back to the stream per reserve at most.
const PROMOTE_PER_RESERVE: u32 = 200;

/// Longest handler error kept with a job.
const MAX_ERROR_BYTES: usize = 1024;

const NOW_MS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

const ENQUEUE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {0, 0} end
local depth = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[3])
if depth >= tonumber(ARGV[3]) then return {2, depth} end
local eid = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'p', ARGV[2], 'a', 0, 'e', now)
redis.call('HSET', KEYS[2], ARGV[1], eid)
return {1, depth + 1}
";

const RESERVE: &str = r"
local function fields(kv)
  local f = {}
  for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  return f
end
-- 1. delayed jobs whose back-off passed go back to the stream
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, jid in ipairs(due) do
  local p = redis.call('HGET', KEYS[4], jid)
  local m = redis.call('HGET', KEYS[5], jid)
  if p and m then
    local a, e = string.match(m, '^(%d+):(%d+)$')
    local eid = redis.call('XADD', KEYS[1], '*', 'id', jid, 'p', p, 'a', a, 'e', e)
    redis.call('HSET', KEYS[2], jid, eid)
  end
  redis.call('ZREM', KEYS[3], jid)
  redis.call('HDEL', KEYS[4], jid)
  redis.call('HDEL', KEYS[5], jid)
end
local n = tonumber(ARGV[3])
local out = {}
local dead = 0
-- 2. entries whose lease expired (idle past the visibility timeout)
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0', 'COUNT', n)
for _, ent in ipairs(claimed[2]) do
  if type(ent) == 'table' and type(ent[2]) == 'table' then
    local eid = ent[1]
    local f = fields(ent[2])
    local pend = redis.call('XPENDING', KEYS[1], ARGV[1], eid, eid, 1)
    local count = 1
    if pend[1] then count = tonumber(pend[1][4]) end
    local attempt = tonumber(f['a']) + count
    if attempt > tonumber(ARGV[5]) then
      redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[6], '*', 'id', f['id'], 'p', f['p'],
        'a', attempt - 1, 'e', f['e'], 'err', 'lease expired (worker died or hung)', 'at', now)
      redis.call('XACK', KEYS[1], ARGV[1], eid)
      redis.call('XDEL', KEYS[1], eid)
      redis.call('HDEL', KEYS[2], f['id'])
      dead = dead + 1
    else
      table.insert(out, {eid, f['id'], f['p'], attempt, tonumber(f['e'])})
    end
  end
end
-- 2b. forget consumers holding nothing that have not been heard from for longer than the
-- visibility timeout (a live worker polls far more often; if one is forgotten anyway,
-- its next XREADGROUP re-adds it), so the group does not grow with every dead worker
-- process. Checked at every takeover (a consumer died or hung) and, at most once per
-- visibility timeout, at any reserve (a dead consumer whose entries were taken over
-- before it went quiet long enough is forgotten at a later reserve). `inactive` (Redis
-- 7.2+: time since its last successful read) is preferred to `idle` (any attempt).
local prune_due = redis.call('GET', KEYS[7])
if #claimed[2] > 0 or not prune_due or tonumber(prune_due) <= now then
  redis.call('SET', KEYS[7], now + tonumber(ARGV[4]))
  local cs = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
  for i = 1, math.min(#cs, 1000) do
    local c = fields(cs[i])
    local quiet = tonumber(c['inactive'] or c['idle'])
    if c['name'] ~= ARGV[2] and tonumber(c['pending']) == 0
        and quiet and quiet > tonumber(ARGV[4]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    end
  end
end
-- 3. new entries
if #out < n then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n - #out,
    'STREAMS', KEYS[1], '>')
  if r then
    for _, ent in ipairs(r[1][2]) do
      local f = fields(ent[2])
      table.insert(out, {ent[1], f['id'], f['p'], tonumber(f['a']) + 1, tonumber(f['e'])})
    end
  end
end
return {dead, out}
";

const ACK: &str = r"
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not pend[1] or pend[1][2] ~= ARGV[4] then return 0 end
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if n == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
end
return n
";

const NACK: &str = r"
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not pend[1] or pend[1][2] ~= ARGV[2] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if ARGV[8] == 'dead' then
  redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[11], '*', 'id', ARGV[4], 'p', ARGV[5],
    'a', ARGV[6], 'e', ARGV[7], 'err', ARGV[10], 'at', now)
  redis.call('HDEL', KEYS[2], ARGV[4])
  return 0
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[9]), ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[6] .. ':' .. ARGV[7])
redis.call('HSET', KEYS[2], ARGV[4], 'delayed')
return 1
";

const STATS: &str = r"
local xlen = redis.call('XLEN', KEYS[1])
local delayed = redis.call('ZCARD', KEYS[3])
local pel = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local dead = redis.call('XLEN', KEYS[6])
local age = -1
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if first[1] then
  local kv = first[1][2]
  for i = 1, #kv, 2 do
    if kv[i] == 'e' then age = now - tonumber(kv[i + 1]) end
  end
  if age < 0 then age = 0 end
end
return {xlen, delayed, pel, dead, age}
";

const LEAVE: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p[1] then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
";

/// The seven keys of one queue, in the order the scripts expect.
#[derive(Clone, Debug)]
struct Keys {
    stream: String,
    ids: String,
    delayed: String,
    held: String,
    meta: String,
    dead: String,
    prune: String,
}

impl Keys {
    fn new(name: &str) -> Self {
        let k = |s: &str| format!("jobs:{{{name}}}:{s}");
        Self {
            stream: k("stream"),
            ids: k("ids"),
            delayed: k("delayed"),
            held: k("held"),
            meta: k("meta"),
            dead: k("dead"),
            prune: k("prune"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.stream,
            &self.ids,
            &self.delayed,
            &self.held,
            &self.meta,
            &self.dead,
            &self.prune,
        ]
    }
}

#[derive(Clone, Debug)]
struct Scripts {
    enqueue: Script,
    reserve: Script,
    ack: Script,
    nack: Script,
    stats: Script,
    leave: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_now = |body: &str| Script::new(&format!("{NOW_MS}{body}"));
        Self {
            enqueue: with_now(ENQUEUE),
            reserve: with_now(RESERVE),
            ack: Script::new(ACK),
            nack: with_now(NACK),
            stats: with_now(STATS),
            leave: Script::new(LEAVE),
        }
    }
}

/// A queue on Redis Streams (single node; keys carry a hash tag for a later cluster).
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    cfg: QueueConfig,
    keys: Arc<Keys>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("stream", &self.keys.stream)
            .finish()
    }
}

impl RedisQueue {
    /// Connects to `url` (`redis://host:port[/db]`) and creates the consumer group.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, JobsError> {
        cfg.validate()?;
        let client = redis::Client::open(url)?;
        let ms = cfg.op_timeout_ms;
        let conn = bounded("redis connect", ms, ConnectionManager::new(client)).await?;
        let me = Self {
            conn,
            keys: Arc::new(Keys::new(&cfg.name)),
            cfg,
            scripts: Arc::new(Scripts::new()),
        };
        me.ensure_group().await?;
        Ok(me)
    }

    /// The stream key (for tests and operators: `XINFO STREAM <key>`).
    pub fn stream_key(&self) -> &str {
        &self.keys.stream
    }

    /// The dead-letter stream key.
    pub fn dead_key(&self) -> &str {
        &self.keys.dead
    }

    /// `XGROUP CREATE <stream> workers 0 MKSTREAM`, tolerating an existing group.
    async fn ensure_group(&self) -> Result<(), JobsError> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        let r: Result<Result<Value, redis::RedisError>, _> = tokio::time::timeout(
            Duration::from_millis(self.cfg.op_timeout_ms),
            cmd.query_async(&mut c),
        )
        .await;
        match r {
            Err(_) => Err(JobsError::Timeout {
                op: "redis xgroup create",
                ms: self.cfg.op_timeout_ms,
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        args: &[&[u8]],
    ) -> Result<T, JobsError> {
        let mut inv = script.prepare_invoke();
        for k in self.keys.all() {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        let mut c = self.conn.clone();
        bounded(op, self.cfg.op_timeout_ms, inv.invoke_async(&mut c)).await
    }
}

/// One delivered entry as the reserve script returns it.
type Entry = (String, String, Vec<u8>, i64, i64);

impl Queue for RedisQueue {
    fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, JobsError> {
        crate::validate_job(job, &self.cfg)?;
        let max = self.cfg.max_depth.to_string();
        let (code, depth): (i64, u64) = self
            .run(
                "redis enqueue",
                &self.scripts.enqueue,
                &[job.id.as_bytes(), &job.payload, max.as_bytes()],
            )
            .await?;
        match code {
            0 => Ok(Enqueued::Duplicate),
            1 => Ok(Enqueued::Added),
            _ => Err(JobsError::Full {
                queue: self.cfg.name.clone(),
                depth,
                max_depth: self.cfg.max_depth,
            }),
        }
    }

    async fn reserve(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, JobsError> {
        crate::validate_consumer(consumer)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let n = max.min(1_000).to_string();
        let idle = self.cfg.visibility_timeout_ms.to_string();
        let attempts = self.cfg.max_attempts.to_string();
        let max_dead = self.cfg.max_dead.to_string();
        let promote = PROMOTE_PER_RESERVE.to_string();
        let args: [&[u8]; 7] = [
            GROUP.as_bytes(),
            consumer.as_bytes(),
            n.as_bytes(),
            idle.as_bytes(),
            attempts.as_bytes(),
            max_dead.as_bytes(),
            promote.as_bytes(),
        ];
        let r: Result<(i64, Vec<Entry>), JobsError> = self
            .run("redis reserve", &self.scripts.reserve, &args)
            .await;
        let (_dead, entries) = match r {
            // The stream (and with it the group) was deleted under us: recreate, retry once.
            Err(JobsError::Redis(e)) if e.to_string().contains("NOGROUP") => {
                self.ensure_group().await?;
                self.run("redis reserve", &self.scripts.reserve, &args)
                    .await?
            }
            other => other?,
        };
        Ok(entries
            .into_iter()
            .map(|(eid, id, payload, attempt, e)| Delivery {
                id,
                payload,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                enqueued_at_ms: u64::try_from(e).unwrap_or(0),
                consumer: consumer.to_string(),
                receipt: Receipt::Entry(eid),
            })
            .collect())
    }

    async fn ack(&self, d: &Delivery) -> Result<Acked, JobsError> {
        let Receipt::Entry(eid) = &d.receipt else {
            return Err(JobsError::Invalid {
                field: "delivery",
                reason: "not from a Redis queue".into(),
            });
        };
        let n: i64 = self
            .run(
                "redis ack",
                &self.scripts.ack,
                &[
                    GROUP.as_bytes(),
                    eid.as_bytes(),
                    d.id.as_bytes(),
                    d.consumer.as_bytes(),
                ],
            )
            .await?;
        Ok(if n == 1 { Acked::Done } else { Acked::Stale })
    }

    async fn nack(&self, d: &Delivery, error: &str) -> Result<Nacked, JobsError> {
        let Receipt::Entry(eid) = &d.receipt else {
            return Err(JobsError::Invalid {
                field: "delivery",
                reason: "not from a Redis queue".into(),
            });
        };
        let decision = self.cfg.retry().decide(d.attempt, rand::random());
        let (kind, delay) = match decision {
            NackDecision::Retry(ms) => ("retry", ms),
            NackDecision::DeadLetter => ("dead", 0),
        };
        let attempt = d.attempt.to_string();
        let enq = d.enqueued_at_ms.to_string();
        let delay_s = delay.to_string();
        let max_dead = self.cfg.max_dead.to_string();
        let err = truncate(error, MAX_ERROR_BYTES);
        let r: i64 = self
            .run(
                "redis nack",
                &self.scripts.nack,
                &[
                    GROUP.as_bytes(),
                    d.consumer.as_bytes(),
                    eid.as_bytes(),
                    d.id.as_bytes(),
                    &d.payload,
                    attempt.as_bytes(),
                    enq.as_bytes(),
                    kind.as_bytes(),
                    delay_s.as_bytes(),
                    err.as_bytes(),
                    max_dead.as_bytes(),
                ],
            )
            .await?;
        Ok(match r {
            -1 => Nacked::Stale,
            0 => Nacked::DeadLettered,
            _ => Nacked::Retry { delay_ms: delay },
        })
    }

    async fn stats(&self) -> Result<QueueStats, JobsError> {
        let (xlen, delayed, pel, dead, age): (u64, u64, u64, u64, i64) = self
            .run("redis stats", &self.scripts.stats, &[GROUP.as_bytes()])
            .await?;
        Ok(QueueStats {
            ready: xlen.saturating_sub(pel),
            delayed,
            leased: pel,
            dead,
            oldest_age_ms: u64::try_from(age).ok(),
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadJob>, JobsError> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.keys.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit.clamp(1, 10_000));
        let v: Value = bounded(
            "redis dead letters",
            self.cfg.op_timeout_ms,
            cmd.query_async(&mut c),
        )
        .await?;
        parse_dead(v)
    }

    async fn leave(&self, consumer: &str) -> Result<(), JobsError> {
        crate::validate_consumer(consumer)?;
        let _: i64 = self
            .run(
                "redis leave",
                &self.scripts.leave,
                &[GROUP.as_bytes(), consumer.as_bytes()],
            )
            .await?;
        Ok(())
    }
}

/// Parses `XRANGE` of the dead stream: `[[entry id, [field, value, ...]], ...]`.
fn parse_dead(v: Value) -> Result<Vec<DeadJob>, JobsError> {
    let bad = |what: &str| JobsError::Protocol(format!("dead-letter stream: {what}"));
    let Value::Array(entries) = v else {
        return Err(bad("not an array"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(mut pair) = e else {
            return Err(bad("entry not an array"));
        };
        let Some(Value::Array(kv)) = pair.pop() else {
            return Err(bad("fields missing"));
        };
        let mut job = DeadJob {
            id: String::new(),
            payload: Vec::new(),
            attempts: 0,
            last_error: String::new(),
        };
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
                continue;
            };
            match k.as_slice() {
                b"id" => job.id = String::from_utf8_lossy(&v).into_owned(),
                b"p" => job.payload = v,
                b"a" => job.attempts = String::from_utf8_lossy(&v).parse().unwrap_or(0),
                b"err" => job.last_error = String::from_utf8_lossy(&v).into_owned(),
                _ => {}
            }
        }
        out.push(job);
    }
    Ok(out)
}

/// `s` cut to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
