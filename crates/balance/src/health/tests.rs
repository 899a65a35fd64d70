use super::*;

fn hc(rise: u32, fall: u32) -> HealthConfig {
    HealthConfig {
        rise,
        fall,
        ..HealthConfig::default()
    }
}

#[test]
fn falls_after_fall_consecutive_failures_only() {
    let mut h = HealthState::new(&hc(2, 3));
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(false), None);
    // A success in between restarts the run.
    assert_eq!(h.observe(true), None);
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(false), None);
    assert_eq!(
        h.observe(false),
        Some(Transition {
            from: HealthStatus::Healthy,
            to: HealthStatus::Unhealthy
        })
    );
    assert!(!h.is_healthy());
    // Further failures do not transition again.
    assert_eq!(h.observe(false), None);
}

#[test]
fn rises_after_rise_consecutive_successes() {
    let mut h = HealthState::with_status(&hc(3, 1), HealthStatus::Unhealthy);
    assert_eq!(h.observe(true), None);
    assert_eq!(h.observe(true), None);
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(true), None);
    assert_eq!(h.observe(true), None);
    assert_eq!(
        h.observe(true),
        Some(Transition {
            from: HealthStatus::Unhealthy,
            to: HealthStatus::Healthy
        })
    );
    assert_eq!(h.status(), HealthStatus::Healthy);
}

#[test]
fn fall_of_one_ejects_on_first_failure() {
    let mut h = HealthState::new(&hc(1, 1));
    assert!(h.observe(false).is_some());
    assert!(h.observe(true).is_some());
}

fn oc() -> OutlierConfig {
    OutlierConfig {
        base_ejection_ms: 1000,
        max_ejection_ms: 5000,
        ..OutlierConfig::default()
    }
}

#[test]
fn ejection_time_doubles_and_is_capped() {
    let c = oc();
    let ms = |k| ejection_duration(&c, k).as_millis();
    assert_eq!(
        [ms(1), ms(2), ms(3), ms(4), ms(100)],
        [1000, 2000, 4000, 5000, 5000]
    );
}

#[test]
fn ejection_expires_and_back_off_grows_then_resets() {
    let c = oc();
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut e = Ejection::default();
    assert!(!e.is_ejected(t0));
    assert_eq!(e.eject(&c, t0), t0 + s);
    assert!(e.is_ejected(t0 + s / 2));
    assert!(!e.expire(t0 + s / 2));
    assert!(!e.is_ejected(t0 + s));
    assert!(e.expire(t0 + s));
    assert!(!e.expire(t0 + s));
    // Re-ejected soon after: twice as long.
    assert_eq!(e.eject(&c, t0 + 2 * s), t0 + 4 * s);
    assert_eq!(e.times(), 2);
    e.expire(t0 + 4 * s);
    // Quiet for max_ejection_ms after the last ejection ended: the series restarts.
    let later = t0 + 4 * s + Duration::from_millis(c.max_ejection_ms);
    assert_eq!(e.next_duration(&c, later), s);
    assert_eq!(e.eject(&c, later), later + s);
    assert_eq!(e.times(), 1);
}

#[test]
fn ejection_cap_follows_envoy() {
    let mut c = oc();
    c.max_ejection_percent = 50;
    assert!(ejection_allowed(&c, 0, 10));
    assert!(ejection_allowed(&c, 4, 10));
    assert!(!ejection_allowed(&c, 5, 10));
    // One may always be ejected, even when 10% of the pool is less than one backend.
    c.max_ejection_percent = 10;
    assert!(ejection_allowed(&c, 0, 3));
    assert!(!ejection_allowed(&c, 1, 3));
    c.max_ejection_percent = 100;
    assert!(ejection_allowed(&c, 2, 3));
    assert!(!ejection_allowed(&c, 3, 3));
    assert!(!ejection_allowed(&c, 0, 0));
}
