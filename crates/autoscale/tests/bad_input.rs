//! Invalid policy and trace files are refused with the field or line named; valid ones
//! (including the shipped traces) load. Real files in a temporary directory.

use std::path::PathBuf;

use autoscale::{Config, ConfigError, Trace, TraceError};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autoscale-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn field_of(text: &str) -> String {
    match Config::from_toml_str(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        Err(ConfigError::Parse(m)) => format!("parse: {m}"),
        Ok(_) => panic!("accepted: {text}"),
    }
}

#[test]
fn invalid_policy_fields_are_named() {
    let cases = [
        ("min_instances = 0", "min_instances"),
        ("min_instances = 5\nmax_instances = 2", "max_instances"),
        ("target_in_flight = -1.0", "target_in_flight"),
        ("target_cpu_pct = 150.0", "target_cpu_pct"),
        (
            "target_in_flight = 0.5\n[hpa]\ntolerance = 1.5",
            "hpa.tolerance",
        ),
        (
            "[hpa.scale_up]\npolicies = [{ kind = \"pods\", value = 4, period_s = 0 }]",
            "hpa.scale_up.policies[0].period_s",
        ),
        (
            "[hpa.scale_down]\nstabilization_window_s = 7200",
            "hpa.scale_down.stabilization_window_s",
        ),
        ("[kpa]\nstable_window_s = 2", "kpa.stable_window_s"),
        (
            "[kpa]\npanic_threshold_pct = 50.0",
            "kpa.panic_threshold_pct",
        ),
        (
            "policy = \"kpa\"\ntarget_in_flight = 0.5\ntarget_cpu_pct = 50.0\n[kpa]\ntarget_utilisation = 0.0",
            "kpa.target_utilisation",
        ),
        (
            "[step]\nsteps = [{ lower_pct = 10.0, upper_pct = 50.0, adjust_instances = 1 }, { lower_pct = 40.0, adjust_instances = 2 }]",
            "step.steps[1]",
        ),
        (
            "[[schedule.windows]]\nstart_s = 100\nend_s = 50\nmin_instances = 2",
            "schedule.windows[0].end_s",
        ),
        (
            "[predictive]\nenabled = true\nmetric = \"rps\"",
            "predictive.metric",
        ),
        ("[predictive]\nalpha = 1.5", "predictive.alpha"),
        (
            "[default]\npanic_threshold = 0.5",
            "default.panic_threshold",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(field_of(text), want, "{text}");
    }
}

#[test]
fn unknown_and_mistyped_fields_are_named() {
    let f = field_of("max_instance = 3");
    assert!(f.contains("max_instance"), "{f}");
    let f = field_of("[hpa]\nsync_period = 15");
    assert!(f.contains("sync_period"), "{f}");
    let f = field_of("policy = \"magic\"");
    assert!(f.contains("magic"), "{f}");
}

#[test]
fn a_valid_policy_file_loads_and_builds() {
    let p = temp_file(
        "policy.toml",
        "policy = \"hpa\"\nmin_instances = 2\nmax_instances = 20\ntarget_rps = 50.0\ntarget_in_flight = 8.0\n\
         [hpa.scale_down]\nstabilization_window_s = 120\npolicies = [{ kind = \"pods\", value = 1, period_s = 60 }]\n",
    );
    let cfg = Config::from_toml_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(cfg.hpa.scale_down.stabilization_window_s, 120);
    assert_eq!(cfg.targets().len(), 2);
    let policy = autoscale::build_policy(&cfg).unwrap();
    assert_eq!(policy.name(), "hpa");
}

#[test]
fn bad_trace_files_name_the_line() {
    let p = temp_file("bad.csv", "# demand\nt,rps\n0,10\n1,11\n2,twelve\n");
    match Trace::from_path(&p) {
        Err(TraceError::Line { line, message }) => {
            assert_eq!(line, 5);
            assert!(message.contains("twelve"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let missing = std::env::temp_dir().join("autoscale-no-such-trace.csv");
    assert!(matches!(
        Trace::from_path(&missing),
        Err(TraceError::Io { .. })
    ));
}

#[test]
fn shipped_traces_load_and_match_their_generators() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("traces");
    for name in autoscale::trace::generate::NAMES {
        let path = dir.join(format!("{name}.csv"));
        let t = Trace::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (g, _) = autoscale::trace::generate::by_name(name).unwrap();
        assert_eq!(t.len_s(), g.len_s(), "{name}");
        assert!(
            t.rps
                .iter()
                .zip(&g.rps)
                .all(|(a, b)| (a - b).abs() <= 0.05 + 1e-9),
            "{name}"
        );
    }
}
