use super::*;

#[test]
fn host_default_scales_with_cores() {
    assert_eq!(Envelope::for_host(1).cpu, 0.25);
    assert_eq!(Envelope::for_host(2).cpu, 0.25);
    assert_eq!(Envelope::for_host(8).cpu, 1.0);
    assert_eq!(Envelope::for_host(12).cpu, 1.5);
    assert_eq!(Envelope::for_host(64).cpu, 4.0);
    assert_eq!(Envelope::for_host(2).memory_mib, 256);
    Envelope::for_host(0).validate("x").unwrap();
}

#[test]
fn bad_envelopes_name_the_field() {
    for (e, field) in [
        (
            Envelope {
                cpu: 0.0,
                memory_mib: 64,
            },
            "r.cpu",
        ),
        (
            Envelope {
                cpu: -1.0,
                memory_mib: 64,
            },
            "r.cpu",
        ),
        (
            Envelope {
                cpu: f64::NAN,
                memory_mib: 64,
            },
            "r.cpu",
        ),
        (
            Envelope {
                cpu: 0.001,
                memory_mib: 64,
            },
            "r.cpu",
        ),
        (
            Envelope {
                cpu: 0.5,
                memory_mib: 15,
            },
            "r.memory_mib",
        ),
    ] {
        let err = e.validate("r").unwrap_err().to_string();
        assert!(err.contains(field), "{e:?}: {err}");
    }
    Envelope {
        cpu: 0.25,
        memory_mib: 16,
    }
    .validate("r")
    .unwrap();
}

#[test]
fn quota_and_quantities() {
    let e = Envelope {
        cpu: 0.25,
        memory_mib: 256,
    };
    assert_eq!(e.cfs_quota_us(), 25_000);
    assert_eq!(e.memory_bytes(), 256 << 20);
    assert_eq!(e.k8s_cpu(), "250m");
    assert_eq!(e.k8s_memory(), "256Mi");
    assert_eq!(
        Envelope {
            cpu: 2.0,
            memory_mib: 16
        }
        .k8s_cpu(),
        "2"
    );
}

#[test]
fn resources_fill_unset_fields_from_the_host() {
    let r: Resources = toml::from_str("cpu = 0.5").unwrap();
    assert!(r.enforce);
    assert_eq!(
        r.envelope(64),
        Envelope {
            cpu: 0.5,
            memory_mib: 256
        }
    );
    let err = toml::from_str::<Resources>("cpus = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpus"), "{err}");
}

#[test]
fn owner_names_round_trip_and_reject_others() {
    assert_eq!(
        Owner::parse("123-4567-0"),
        Some(Owner {
            pid: 123,
            start: 4567
        })
    );
    for bad in ["", "123", "123-4", "a-1-0", ".probe-1", "1-2-3-4"] {
        assert_eq!(Owner::parse(bad), None, "{bad}");
    }
    let me = Owner::me().unwrap();
    assert!(me.alive());
    assert!(
        !Owner {
            start: me.start + 1,
            ..me
        }
        .alive()
    );
}

#[test]
fn stat_files_parse() {
    let cpu = "nr_periods 10\nnr_throttled 7\nthrottled_time 123456\n";
    assert_eq!(stats::keyed(cpu, "nr_throttled"), Some(7));
    assert_eq!(stats::keyed(cpu, "throttled_time"), Some(123_456));
    assert_eq!(stats::keyed(cpu, "nr_periods"), Some(10));
    assert_eq!(stats::keyed(cpu, "missing"), None);
    let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
    assert_eq!(stats::keyed(oom, "oom_kill"), Some(2));
}

#[test]
fn use_over_an_interval() {
    let a = EnvelopeStats {
        cpu_usage_ns: 1_000_000_000,
        nr_periods: 100,
        nr_throttled: 10,
        ..EnvelopeStats::default()
    };
    let b = EnvelopeStats {
        cpu_usage_ns: 1_500_000_000,
        nr_periods: 120,
        nr_throttled: 25,
        memory_bytes: 64 << 20,
        oom_kills: 1,
        ..EnvelopeStats::default()
    };
    let u = b.since(&a, Duration::from_secs(2));
    assert!((u.cpu_cores - 0.25).abs() < 1e-9, "{u:?}");
    assert!((u.throttled_share - 0.75).abs() < 1e-9, "{u:?}");
    assert_eq!(u.memory_mib, 64.0);
    assert_eq!(u.oom_kills, 1);
    // A recreated group (counters reset) counts from zero, never negative.
    let reset = EnvelopeStats::default().since(&b, Duration::from_secs(1));
    assert_eq!(reset.cpu_cores, 0.0);
    assert_eq!(
        EnvelopeStats::default().since(&a, Duration::ZERO).cpu_cores,
        0.0
    );
}

#[test]
fn wrapper_joins_then_execs_the_program() {
    let argv: Vec<OsString> = vec!["/bin/echo".into(), "hi there".into()];
    let w = join_wrapper(&[PathBuf::from("/a/cgroup.procs")], &argv);
    assert_eq!(w[0], "/bin/sh");
    assert_eq!(w[4], "1");
    assert_eq!(w[5], "/a/cgroup.procs");
    assert_eq!(&w[6..], &argv[..]);
}
