//! Queue behaviour on each backend against the real store: visibility timeout and claim,
//! retry with back-off then dead letter, bounded enqueue and idempotent enqueue, stats.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs::{Acked, Enqueued, JobsError, NewJob, Queue, QueueConfig, Worker, WorkerConfig};
use support::{Backend, EffectHandler, Place, wait_for};
use tokio_util::sync::CancellationToken;

async fn visibility_timeout_claim(backend: Backend) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        visibility_timeout_ms: 2_000,
        ..place.queue_config()
    };
    let q = place.queue(cfg, "jobs-vis").await;
    assert_eq!(
        q.enqueue(&NewJob::new("job-1", *b"hello")).await.unwrap(),
        Enqueued::Added
    );
    let t0 = Instant::now();
    let a = q.reserve("consumer-a", 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].id, "job-1");
    assert_eq!(a[0].payload, b"hello");
    assert_eq!(a[0].attempt, 1);
    let s = q.stats().await.unwrap();
    assert_eq!((s.ready, s.leased), (0, 1), "{s:?}");

    // While the lease holds, nobody else gets the job.
    assert!(q.reserve("consumer-b", 10).await.unwrap().is_empty());

    // After the visibility timeout, another consumer claims it, attempt raised.
    let b = wait_for(
        "the claim after the visibility timeout",
        Duration::from_secs(10),
        || {
            let q = q.clone();
            async move {
                let got = q.reserve("consumer-b", 10).await.unwrap();
                (!got.is_empty()).then_some(got)
            }
        },
    )
    .await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1_900),
        "claimed after {waited:?}, before the 2 s visibility timeout"
    );
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].id, "job-1");
    assert_eq!(b[0].attempt, 2);
    assert_eq!(b[0].payload, b"hello");

    // The first holder lost its lease: its ack changes nothing; the new holder's counts.
    assert_eq!(q.ack(&a[0]).await.unwrap(), Acked::Stale);
    assert_eq!(q.stats().await.unwrap().depth(), 1);
    assert_eq!(q.ack(&b[0]).await.unwrap(), Acked::Done);
    let s = q.stats().await.unwrap();
    assert_eq!(s.depth(), 0, "{s:?}");
    assert_eq!(s.oldest_age_ms, None);
    assert!(q.reserve("consumer-c", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn visibility_timeout_claim_redis() {
    visibility_timeout_claim(Backend::Redis).await;
}

#[tokio::test]
async fn visibility_timeout_claim_postgres() {
    visibility_timeout_claim(Backend::Postgres).await;
}

#[tokio::test]
async fn visibility_timeout_claim_sqlite() {
    visibility_timeout_claim(Backend::Sqlite).await;
}

async fn retry_backoff_then_dead_letter(backend: Backend) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        max_attempts: 3,
        backoff_base_ms: 200,
        backoff_max_ms: 1_000,
        visibility_timeout_ms: 5_000,
        ..place.queue_config()
    };
    let q = Arc::new(place.queue(cfg, "jobs-dlq").await);
    let effects = place.effects("jobs-dlq-effects").await;
    let handler = Arc::new(EffectHandler {
        poison: vec!["poison".into()],
        ..Arc::into_inner(EffectHandler::new(effects.clone(), "w1")).unwrap()
    });
    q.enqueue(&NewJob::new("poison", *b"bad")).await.unwrap();
    q.enqueue(&NewJob::new("good", *b"ok")).await.unwrap();

    let worker = Worker::new(
        q.clone(),
        handler.clone(),
        WorkerConfig {
            consumer: "w1".into(),
            poll_interval_ms: 20,
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    let metrics = worker.metrics();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(worker.run(cancel.clone()));

    let dead = wait_for(
        "the poison job in the dead letters",
        Duration::from_secs(20),
        || {
            let q = q.clone();
            async move {
                let d = q.dead_letters(10).await.unwrap();
                (!d.is_empty()).then_some(d)
            }
        },
    )
    .await;
    cancel.cancel();
    let report = run.await.unwrap();

    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "poison");
    assert_eq!(dead[0].payload, b"bad");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].last_error.contains("poison job poison refused"),
        "{dead:?}"
    );

    // Three deliveries, attempts 1, 2, 3, spaced by at least half the nominal back-off
    // (200 ms then 400 ms; equal jitter never goes below half).
    let seen = handler.seen_of("poison");
    let attempts: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let gap1 = seen[1].1 - seen[0].1;
    let gap2 = seen[2].1 - seen[1].1;
    assert!(gap1 >= Duration::from_millis(95), "first back-off {gap1:?}");
    assert!(
        gap2 >= Duration::from_millis(195),
        "second back-off {gap2:?}"
    );

    // The good job was done once; nothing is left; the counters agree.
    assert_eq!(effects.of("good").await.len(), 1);
    assert!(effects.of("poison").await.is_empty());
    let s = q.stats().await.unwrap();
    assert_eq!((s.depth(), s.dead), (0, 1), "{s:?}");
    assert_eq!(report.counters.failed, 3, "{report:?}");
    assert_eq!(report.counters.dead_lettered, 1, "{report:?}");
    assert_eq!(report.counters.processed, 1, "{report:?}");
    assert_eq!(metrics.snapshot().in_flight, 0);
    assert_eq!(report.abandoned, 0);

    // A dead-lettered id may be enqueued again (it is no longer queued).
    assert_eq!(
        q.enqueue(&NewJob::new("poison", *b"fixed")).await.unwrap(),
        Enqueued::Added
    );
}

#[tokio::test]
async fn retry_backoff_then_dead_letter_redis() {
    retry_backoff_then_dead_letter(Backend::Redis).await;
}

#[tokio::test]
async fn retry_backoff_then_dead_letter_postgres() {
    retry_backoff_then_dead_letter(Backend::Postgres).await;
}

#[tokio::test]
async fn retry_backoff_then_dead_letter_sqlite() {
    retry_backoff_then_dead_letter(Backend::Sqlite).await;
}

async fn bounded_and_idempotent_enqueue(backend: Backend) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        max_depth: 3,
        max_payload_bytes: 16,
        ..place.queue_config()
    };
    let q = place.queue(cfg, "jobs-bounded").await;
    for id in ["a", "b", "c"] {
        assert_eq!(
            q.enqueue(&NewJob::new(id, *b"x")).await.unwrap(),
            Enqueued::Added
        );
    }
    // The same id again is a no-op, even at the bound.
    assert_eq!(
        q.enqueue(&NewJob::new("a", *b"y")).await.unwrap(),
        Enqueued::Duplicate
    );
    // A fourth job is refused, saying why.
    match q.enqueue(&NewJob::new("d", *b"x")).await {
        Err(JobsError::Full {
            depth, max_depth, ..
        }) => {
            assert_eq!((depth, max_depth), (3, 3));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // Bad input is refused before the store, naming the field.
    let e = q
        .enqueue(&NewJob::new("e", vec![0u8; 17]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("payload"), "{e}");
    let e = q.enqueue(&NewJob::new("bad id", *b"x")).await.unwrap_err();
    assert!(e.to_string().contains("job id"), "{e}");
    let e = q.reserve("bad consumer!", 1).await.unwrap_err();
    assert!(e.to_string().contains("consumer"), "{e}");

    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.ready, s.leased, s.delayed, s.dead),
        (3, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.oldest_age_ms.is_some());

    // A leased job still counts against the bound and still dedups.
    let got = q.reserve("c1", 1).await.unwrap();
    assert_eq!(got.len(), 1);
    let first = got[0].id.clone();
    assert_eq!(first, "a", "FIFO: the oldest job first");
    assert_eq!(
        q.enqueue(&NewJob::new("a", *b"x")).await.unwrap(),
        Enqueued::Duplicate
    );
    assert!(matches!(
        q.enqueue(&NewJob::new("d", *b"x")).await,
        Err(JobsError::Full { .. })
    ));
    // Once acked, there is room again, and the id is free.
    assert_eq!(q.ack(&got[0]).await.unwrap(), Acked::Done);
    assert_eq!(
        q.enqueue(&NewJob::new("d", *b"x")).await.unwrap(),
        Enqueued::Added
    );
    let s = q.stats().await.unwrap();
    assert_eq!(s.depth(), 3, "{s:?}");
    // Payload round-trips byte for byte (binary safe).
    let q2 = q.clone();
    let all = q2.reserve("c2", 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, vec!["b", "c", "d"]);
}

#[tokio::test]
async fn bounded_and_idempotent_enqueue_redis() {
    bounded_and_idempotent_enqueue(Backend::Redis).await;
}

#[tokio::test]
async fn bounded_and_idempotent_enqueue_postgres() {
    bounded_and_idempotent_enqueue(Backend::Postgres).await;
}

#[tokio::test]
async fn bounded_and_idempotent_enqueue_sqlite() {
    bounded_and_idempotent_enqueue(Backend::Sqlite).await;
}

/// A binary payload (every byte value) survives each store unchanged, and a worker drains
/// gracefully: cancelled while a slow handler runs, it finishes that job and acks it.
async fn binary_payload_and_graceful_drain(backend: Backend) {
    let place = Place::new(backend);
    let q = Arc::new(place.queue(place.queue_config(), "jobs-drain").await);
    let payload: Vec<u8> = (0..=255u8).collect();
    q.enqueue(&NewJob::new("bin", payload.clone()))
        .await
        .unwrap();
    let got = q.reserve("c", 1).await.unwrap();
    assert_eq!(got[0].payload, payload);
    q.ack(&got[0]).await.unwrap();

    #[derive(Debug)]
    struct Slow(std::sync::Mutex<Vec<String>>);
    impl jobs::Handler for Slow {
        async fn handle(&self, job: &jobs::Delivery) -> Result<(), jobs::JobFailed> {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            self.0.lock().unwrap().push(job.id.clone());
            Ok(())
        }
    }
    let slow = Arc::new(Slow(Default::default()));
    q.enqueue(&NewJob::new("slow", *b"")).await.unwrap();
    let worker = Worker::new(
        q.clone(),
        slow.clone(),
        WorkerConfig {
            consumer: "drainer".into(),
            poll_interval_ms: 10,
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    let metrics = worker.metrics();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(worker.run(cancel.clone()));
    wait_for("the slow job in flight", Duration::from_secs(10), || {
        let m = metrics.clone();
        async move { (m.snapshot().in_flight == 1).then_some(()) }
    })
    .await;
    cancel.cancel();
    // Enqueued after cancellation (once a reserve already under way at that moment has
    // surely returned), while the slow job still runs: a draining worker that kept
    // polling every 10 ms would take it within the remaining second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    q.enqueue(&NewJob::new("late", *b"")).await.unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.counters.processed, 1);
    assert_eq!(*slow.0.lock().unwrap(), vec!["slow".to_string()]);
    let s = q.stats().await.unwrap();
    assert_eq!((s.ready, s.leased), (1, 0), "only `late` is left: {s:?}");
}

#[tokio::test]
async fn binary_payload_and_graceful_drain_redis() {
    binary_payload_and_graceful_drain(Backend::Redis).await;
}

#[tokio::test]
async fn binary_payload_and_graceful_drain_postgres() {
    binary_payload_and_graceful_drain(Backend::Postgres).await;
}

#[tokio::test]
async fn binary_payload_and_graceful_drain_sqlite() {
    binary_payload_and_graceful_drain(Backend::Sqlite).await;
}

/// Dead letters are bounded (oldest dropped first) and the backlog age grows with time.
async fn dead_letters_bounded_and_age(backend: Backend) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        max_attempts: 1,
        max_dead: 2,
        ..place.queue_config()
    };
    let q = place.queue(cfg, "jobs-deadcap").await;
    for i in 0..4 {
        q.enqueue(&NewJob::new(format!("p{i}"), *b""))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = q.stats().await.unwrap();
    let age = s.oldest_age_ms.expect("an oldest job");
    assert!(age >= 250, "oldest age {age} ms after a 300 ms wait");
    for _ in 0..4 {
        let d = q.reserve("c", 1).await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            q.nack(&d[0], "always fails").await.unwrap(),
            jobs::Nacked::DeadLettered
        );
    }
    let dead = q.dead_letters(10).await.unwrap();
    let ids: Vec<&str> = dead.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, vec!["p2", "p3"], "the newest two are kept");
    let s = q.stats().await.unwrap();
    assert_eq!((s.depth(), s.dead), (0, 2), "{s:?}");
}

#[tokio::test]
async fn dead_letters_bounded_and_age_redis() {
    dead_letters_bounded_and_age(Backend::Redis).await;
}

#[tokio::test]
async fn dead_letters_bounded_and_age_postgres() {
    dead_letters_bounded_and_age(Backend::Postgres).await;
}

#[tokio::test]
async fn dead_letters_bounded_and_age_sqlite() {
    dead_letters_bounded_and_age(Backend::Sqlite).await;
}

/// A store that is not there fails fast with an error, within `op_timeout_ms`.
#[tokio::test]
async fn missing_store_is_an_error_not_a_hang() {
    let cfg = QueueConfig {
        op_timeout_ms: 1_000,
        ..QueueConfig::default()
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // released: nothing listens there now
    for url in [
        format!("redis://127.0.0.1:{port}"),
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    ] {
        let t0 = Instant::now();
        let r = jobs::AnyQueue::connect(&url, cfg.clone()).await;
        assert!(r.is_err(), "{url} connected?");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{url}: {:?}",
            t0.elapsed()
        );
    }
    let e = jobs::AnyQueue::connect("mysql://x", cfg).await.unwrap_err();
    assert!(e.to_string().contains("queue url"), "{e}");
}

/// A handler that panics loses nothing: its slot and in-flight count are released, the job
/// (never acked) is redelivered after the visibility timeout and then done.
async fn panicking_handler_is_redelivered(backend: Backend) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        visibility_timeout_ms: 700,
        ..place.queue_config()
    };
    let q = Arc::new(place.queue(cfg, "jobs-panic").await);
    q.enqueue(&NewJob::new("fragile", *b"")).await.unwrap();

    #[derive(Debug, Default)]
    struct PanicsOnce(std::sync::Mutex<Vec<u32>>);
    impl jobs::Handler for PanicsOnce {
        async fn handle(&self, job: &jobs::Delivery) -> Result<(), jobs::JobFailed> {
            self.0.lock().unwrap().push(job.attempt);
            if job.attempt == 1 {
                panic!("handler bug on the first attempt (expected in this test)");
            }
            Ok(())
        }
    }
    let h = Arc::new(PanicsOnce::default());
    let worker = Worker::new(
        q.clone(),
        h.clone(),
        WorkerConfig {
            consumer: "p1".into(),
            concurrency: 1,
            poll_interval_ms: 20,
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    let metrics = worker.metrics();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(worker.run(cancel.clone()));
    wait_for(
        "the job done after the panic",
        Duration::from_secs(15),
        || {
            let q = q.clone();
            async move { (q.stats().await.unwrap().depth() == 0).then_some(()) }
        },
    )
    .await;
    cancel.cancel();
    let report = run.await.unwrap();
    assert_eq!(*h.0.lock().unwrap(), vec![1, 2]);
    assert_eq!(report.counters.processed, 1, "{report:?}");
    assert_eq!(metrics.snapshot().in_flight, 0);
}

#[tokio::test]
async fn panicking_handler_is_redelivered_redis() {
    panicking_handler_is_redelivered(Backend::Redis).await;
}

#[tokio::test]
async fn panicking_handler_is_redelivered_postgres() {
    panicking_handler_is_redelivered(Backend::Postgres).await;
}

#[tokio::test]
async fn panicking_handler_is_redelivered_sqlite() {
    panicking_handler_is_redelivered(Backend::Sqlite).await;
}
