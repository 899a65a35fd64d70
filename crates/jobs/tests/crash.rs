//! A worker process is SIGKILLed mid-job; the job is redelivered to another worker after
//! the visibility timeout and completes exactly once in effect.
//!
//! The killed worker is a real child process: this test binary re-executed to run only
//! `child_worker` (which does nothing unless `JOBS_CHILD=1`). Two kill points per backend:
//! before the handler's transaction committed (the redelivery does the work) and after it
//! committed but before the ack (the redelivery finds the processed mark and changes
//! nothing).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jobs::{NewJob, Queue, QueueConfig, Worker, WorkerConfig};
use support::{Backend, EffectHandler, Place, Stall, wait_for};
use tokio_util::sync::CancellationToken;

const VISIBILITY_MS: u64 = 1_500;

/// Kills the child (SIGKILL) and reaps it when dropped.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child: runs one worker whose handler stalls as `JOBS_STALL` says, until killed.
#[test]
fn child_worker() {
    if std::env::var("JOBS_CHILD").as_deref() != Ok("1") {
        return;
    }
    let stall = match std::env::var("JOBS_STALL").as_deref() {
        Ok("before_commit") => Stall::BeforeCommit,
        Ok("after_commit") => Stall::AfterCommit,
        other => panic!("JOBS_STALL {other:?}"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let place = Place::from_env();
        let cfg = QueueConfig {
            visibility_timeout_ms: VISIBILITY_MS,
            ..place.queue_config()
        };
        let q = Arc::new(place.queue(cfg, "jobs-child").await);
        let effects = place.effects("jobs-child-effects").await;
        let handler = Arc::new(EffectHandler {
            stall,
            ..Arc::into_inner(EffectHandler::new(effects, "child")).unwrap()
        });
        let worker = Worker::new(
            q,
            handler,
            WorkerConfig {
                consumer: "child".into(),
                concurrency: 1,
                batch: 1,
                poll_interval_ms: 20,
                handler_timeout_ms: 600_000,
                ..WorkerConfig::default()
            },
        )
        .unwrap();
        println!("CHILD_READY");
        worker.run(CancellationToken::new()).await;
    });
}

async fn kill_mid_job(backend: Backend, stall: Stall) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        visibility_timeout_ms: VISIBILITY_MS,
        ..place.queue_config()
    };
    let q = Arc::new(place.queue(cfg, "jobs-parent").await);
    let effects = place.effects("jobs-parent-effects").await;
    q.enqueue(&NewJob::new("order-7-confirm", *b"{\"order\":7}"))
        .await
        .unwrap();

    // 1. The child takes the job and stalls at the chosen point; then it is SIGKILLed.
    let marker = match stall {
        Stall::BeforeCommit => "JOB_STARTED order-7-confirm",
        _ => "JOB_COMMITTED order-7-confirm",
    };
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_worker", "--exact", "--nocapture", "--test-threads=1"])
        .env("JOBS_CHILD", "1")
        .env(
            "JOBS_STALL",
            if stall == Stall::BeforeCommit {
                "before_commit"
            } else {
                "after_commit"
            },
        )
        .envs(place.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = ChildGuard(Some(cmd.spawn().expect("spawn the child worker")));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(marker) => break,
            Ok(_) => continue,
            Err(e) => panic!("child never printed {marker:?}: {e:?}"),
        }
    }
    let killed_at = Instant::now();
    child.kill();

    // What the kill left behind: the job leased to the dead consumer; the effect present
    // only if it was killed after the commit.
    let s = q.stats().await.unwrap();
    assert_eq!(s.depth(), 1, "{s:?}");
    let before = effects.of("order-7-confirm").await;
    assert_eq!(
        before.len(),
        usize::from(stall == Stall::AfterCommit),
        "{before:?}"
    );

    // 2. Another worker (this process) takes the job over after the visibility timeout.
    let handler = EffectHandler::new(effects.clone(), "survivor");
    let worker = Worker::new(
        q.clone(),
        handler.clone(),
        WorkerConfig {
            consumer: "survivor".into(),
            poll_interval_ms: 20,
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(worker.run(cancel.clone()));
    wait_for(
        "the job redelivered and acked",
        Duration::from_secs(30),
        || {
            let q = q.clone();
            async move { (q.stats().await.unwrap().depth() == 0).then_some(()) }
        },
    )
    .await;
    cancel.cancel();
    let report = run.await.unwrap();

    let seen = handler.seen_of("order-7-confirm");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, 2, "the redelivery is attempt 2");
    let lag = seen[0].1 - killed_at;
    assert!(
        lag < Duration::from_secs(20),
        "redelivered only after {lag:?}"
    );
    assert_eq!(report.counters.processed, 1, "{report:?}");

    // Exactly once in effect, by whoever committed first.
    let after = effects.of("order-7-confirm").await;
    assert_eq!(after.len(), 1, "{after:?}");
    let expect = if stall == Stall::BeforeCommit {
        ("survivor".to_string(), 2)
    } else {
        ("child".to_string(), 1)
    };
    assert_eq!(after[0], expect);
    let (rows, distinct, most) = effects.counts().await;
    assert_eq!((rows, distinct, most), (1, 1, 1));
    let s = q.stats().await.unwrap();
    assert_eq!((s.depth(), s.dead), (0, 0), "{s:?}");

    // Redis: the consumer that drained leaves the group.
    if backend == Backend::Redis {
        let client = redis::Client::open(support::REDIS_URL).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let info: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(format!("jobs:{{{}}}:stream", place.name))
            .arg("workers")
            .query_async(&mut c)
            .await
            .unwrap();
        let mut strings = Vec::new();
        flatten(&info, &mut strings);
        // The survivor left the group when it drained.
        assert!(!strings.iter().any(|s| s == "survivor"), "{strings:?}");
        // The killed child holds nothing now; once it has been quiet past the visibility
        // timeout, a later reserve (any consumer's, no takeover needed) forgets it. Its
        // last read may have been just before the kill, so wait up to 3 timeouts.
        let deadline = Instant::now() + Duration::from_millis(3 * VISIBILITY_MS + 2_000);
        loop {
            assert!(q.reserve("probe", 1).await.unwrap().is_empty());
            let info: redis::Value = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(format!("jobs:{{{}}}:stream", place.name))
                .arg("workers")
                .query_async(&mut c)
                .await
                .unwrap();
            let mut strings = Vec::new();
            flatten(&info, &mut strings);
            if !strings.iter().any(|s| s == "child") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the killed consumer was never forgotten: {strings:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_commit_redis() {
    kill_mid_job(Backend::Redis, Stall::BeforeCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_redis() {
    kill_mid_job(Backend::Redis, Stall::AfterCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_commit_postgres() {
    kill_mid_job(Backend::Postgres, Stall::BeforeCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_postgres() {
    kill_mid_job(Backend::Postgres, Stall::AfterCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_commit_sqlite() {
    kill_mid_job(Backend::Sqlite, Stall::BeforeCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_sqlite() {
    kill_mid_job(Backend::Sqlite, Stall::AfterCommit).await;
}

/// Every string inside a Redis reply, depth first.
fn flatten(v: &redis::Value, out: &mut Vec<String>) {
    match v {
        redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => out.push(s.clone()),
        redis::Value::Array(xs) | redis::Value::Set(xs) => xs.iter().for_each(|x| flatten(x, out)),
        redis::Value::Map(kv) => kv.iter().for_each(|(k, x)| {
            flatten(k, out);
            flatten(x, out);
        }),
        _ => {}
    }
}
