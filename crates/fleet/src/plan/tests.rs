//! Case-by-case tests of the reconcile plan and the back-off curve.

use super::*;

fn inst(id: &str, seq: u64, generation: u64, phase: Phase) -> InstanceView {
    InstanceView {
        id: id.into(),
        seq,
        generation,
        phase,
    }
}

fn want(count: u32, generation: u64) -> Desired {
    Desired { count, generation }
}

#[test]
fn empty_fleet_spawns_the_count() {
    let now = Instant::now();
    let a = plan(now, want(3, 0), &[]);
    assert_eq!(a, vec![Action::Spawn { generation: 0 }; 3]);
}

#[test]
fn count_zero_retires_everything() {
    // The plan takes the count as given; `FleetHandle::set_count` keeps it at 1 or more
    // unless the fleet was made able to scale to zero (`with_min(0)`, the worker fleet).
    let now = Instant::now();
    let obs = [inst("a", 1, 0, Phase::Ready)];
    assert_eq!(
        plan(now, want(0, 0), &obs),
        vec![Action::Retire { id: "a".into() }]
    );
}

#[test]
fn steady_state_does_nothing() {
    let now = Instant::now();
    let obs = [
        inst("a", 1, 0, Phase::Ready),
        inst("b", 2, 0, Phase::Starting),
    ];
    assert!(plan(now, want(2, 0), &obs).is_empty());
}

#[test]
fn scale_in_drops_crashed_then_starting_then_newest_ready() {
    let now = Instant::now();
    let later = now + Duration::from_secs(5);
    let obs = [
        inst("a", 1, 0, Phase::Ready),
        inst("b", 2, 0, Phase::Ready),
        inst("c", 3, 0, Phase::Starting),
        inst("d", 4, 0, Phase::Backoff { restart_at: later }),
    ];
    assert_eq!(
        plan(now, want(3, 0), &obs),
        vec![Action::Forget { id: "d".into() }]
    );
    assert_eq!(
        plan(now, want(2, 0), &obs),
        vec![
            Action::Forget { id: "d".into() },
            Action::Retire { id: "c".into() }
        ]
    );
    assert_eq!(
        plan(now, want(1, 0), &obs),
        vec![
            Action::Forget { id: "d".into() },
            Action::Retire { id: "c".into() },
            Action::Retire { id: "b".into() },
        ]
    );
}

#[test]
fn retiring_instances_do_not_count() {
    let now = Instant::now();
    let obs = [
        inst("a", 1, 0, Phase::Ready),
        inst("b", 2, 0, Phase::Retiring),
    ];
    assert_eq!(
        plan(now, want(2, 0), &obs),
        vec![Action::Spawn { generation: 0 }]
    );
}

#[test]
fn crashed_instance_restarts_only_after_backoff() {
    let now = Instant::now();
    let obs = [
        inst("a", 1, 0, Phase::Ready),
        inst(
            "b",
            2,
            0,
            Phase::Backoff {
                restart_at: now + Duration::from_millis(500),
            },
        ),
    ];
    assert!(plan(now, want(2, 0), &obs).is_empty());
    assert_eq!(
        plan(now + Duration::from_millis(500), want(2, 0), &obs),
        vec![Action::Restart { id: "b".into() }]
    );
}

#[test]
fn rolling_restart_is_one_at_a_time_with_surge_of_one() {
    let now = Instant::now();
    // Generation bumped: both old. Start exactly one new.
    let mut obs = vec![inst("a", 1, 0, Phase::Ready), inst("b", 2, 0, Phase::Ready)];
    assert_eq!(
        plan(now, want(2, 1), &obs),
        vec![Action::Spawn { generation: 1 }]
    );

    // The new one is starting: nothing else happens, old ones keep serving.
    obs.push(inst("c", 3, 1, Phase::Starting));
    assert!(plan(now, want(2, 1), &obs).is_empty());

    // The new one is ready: retire the newest old one.
    obs[2].phase = Phase::Ready;
    assert_eq!(
        plan(now, want(2, 1), &obs),
        vec![Action::Retire { id: "b".into() }]
    );

    // b is retiring: count is right and an old one remains: start the next new one.
    obs[1].phase = Phase::Retiring;
    assert_eq!(
        plan(now, want(2, 1), &obs),
        vec![Action::Spawn { generation: 1 }]
    );

    obs.push(inst("d", 4, 1, Phase::Ready));
    assert_eq!(
        plan(now, want(2, 1), &obs),
        vec![Action::Retire { id: "a".into() }]
    );

    obs[0].phase = Phase::Retiring;
    assert!(plan(now, want(2, 1), &obs).is_empty());
}

#[test]
fn crashed_surge_instance_blocks_the_rollout_until_restarted() {
    let now = Instant::now();
    let due = now + Duration::from_secs(1);
    let obs = [
        inst("a", 1, 0, Phase::Ready),
        inst("c", 3, 1, Phase::Backoff { restart_at: due }),
    ];
    assert!(plan(now, want(1, 1), &obs).is_empty());
    assert_eq!(
        plan(due, want(1, 1), &obs),
        vec![Action::Restart { id: "c".into() }]
    );
}

#[test]
fn scale_in_during_rollout_retires_old_first() {
    let now = Instant::now();
    let obs = [
        inst("a", 1, 0, Phase::Ready),
        inst("b", 2, 0, Phase::Ready),
        inst("c", 3, 1, Phase::Ready),
    ];
    assert_eq!(
        plan(now, want(1, 1), &obs),
        vec![
            Action::Retire { id: "b".into() },
            Action::Retire { id: "a".into() }
        ]
    );
}

#[test]
fn backoff_doubles_and_caps() {
    let i = Duration::from_millis(100);
    let m = Duration::from_millis(1000);
    assert_eq!(restart_delay(0, i, m), Duration::from_millis(100));
    assert_eq!(restart_delay(1, i, m), Duration::from_millis(100));
    assert_eq!(restart_delay(2, i, m), Duration::from_millis(200));
    assert_eq!(restart_delay(4, i, m), Duration::from_millis(800));
    assert_eq!(restart_delay(5, i, m), Duration::from_millis(1000));
    assert_eq!(restart_delay(u32::MAX, i, m), Duration::from_millis(1000));
}
