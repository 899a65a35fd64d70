//! Issue 15, the CLI half: one grammar in every `--help`, old spellings still working with
//! a warning, human output without Rust formatting or colour codes in pipes and log files,
//! `--log-format json`, and errors that name what failed once. Every test runs the real
//! binary; none looks at the code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::{ChildGuard, free_addr, temp_dir, wait_http_ok, wait_tcp};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

fn scaleout() -> Command {
    let mut c = Command::new(exe());
    // No colour decisions inherited from the developer's shell.
    c.env_remove("NO_COLOR").env_remove("SCALEOUT_LOG_FORMAT");
    c
}

fn run(args: &[&str]) -> Output {
    scaleout().args(args).output().expect("run scaleout")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn traces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autoscale/traces")
}

fn advisor_example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../advisor/examples/specsdm91-sweep.json")
        .display()
        .to_string()
}

/// The subcommands `scaleout --help` lists.
fn listed_commands() -> Vec<String> {
    let help = stdout(&run(&["--help"]));
    help.split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1) // the rest of the `Commands:` line
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path whose `--help` the grammar covers.
const COMMAND_PATHS: &[&[&str]] = &[
    &["demo"],
    &["up"],
    &["lb"],
    &["shop"],
    &["shop", "reshard"],
    &["shop", "admin", "grant"],
    &["shop", "admin", "revoke"],
    &["load"],
    &["advise"],
    &["audit"],
    &["autoscale", "simulate"],
    &["autoscale", "evaluate"],
    &["autoscale", "write-traces"],
    &["k8s"],
    &["backend"],
];

/// The long flags a `--help` text shows (`--name`).
fn flags(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        for word in t.split([' ', ',', '=']) {
            if let Some(name) = word.strip_prefix("--")
                && !name.is_empty()
            {
                out.push(name.trim_end_matches(['.', ')']).to_string());
            }
        }
    }
    out
}

#[test]
fn every_help_uses_the_one_grammar() {
    // `backend` is used by the README and the benches: it is listed.
    let listed = listed_commands();
    assert!(listed.contains(&"backend".to_string()), "{listed:?}");
    for c in &listed {
        assert!(
            COMMAND_PATHS.iter().any(|p| p[0] == c),
            "command {c} is not covered by this test"
        );
    }
    let with_report = [
        "demo",
        "load",
        "advise",
        "audit",
        "autoscale simulate",
        "autoscale evaluate",
    ];
    for path in COMMAND_PATHS {
        let mut args: Vec<&str> = path.to_vec();
        args.push("--help");
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let help = stdout(&o);
        let name = path.join(" ");
        for f in flags(&help) {
            // Durations carry their unit in the value (`30s`), percentages their sign
            // (`5%`): no `--startup-s 30`, `--op-timeout-ms`, `--noise-pct 5`.
            for bad in ["-s", "-ms", "-pct", "-seconds", "-percent"] {
                assert!(
                    !f.ends_with(bad),
                    "`{name}` shows --{f}: durations and percentages go in the value\n{help}"
                );
            }
            assert!(!f.contains("seconds-per"), "`{name}` shows --{f}");
        }
        // `-c` means the config file wherever it exists.
        for line in help.lines() {
            if line.trim_start().starts_with("-c,") {
                assert!(
                    line.contains("--config"),
                    "`{name}`: -c is not --config: {line}"
                );
            }
        }
        if with_report.contains(&name.as_str()) {
            assert!(
                flags(&help).iter().any(|f| f == "json"),
                "`{name}` has a report but no --json FILE\n{help}"
            );
        }
        // No Rust formatting in help either.
        assert!(!help.contains("Some("), "{name}: {help}");
    }
}

/// Old spellings parse for one release, print one deprecation warning naming the new
/// spelling, and give the same result as the new one.
#[test]
fn deprecated_spellings_still_work_and_warn() {
    let trace = traces().join("step.csv");
    let trace = trace.to_str().unwrap();
    let old = run(&[
        "autoscale",
        "simulate",
        "--trace",
        trace,
        "--startup-s",
        "20",
        "--noise-pct",
        "3",
        "--slo-p99-ms",
        "250",
        "--cold-s",
        "5",
        "--cold-capacity-pct",
        "50",
        "--json",
        "-",
    ]);
    assert!(old.status.success(), "{}", stderr(&old));
    let err = stderr(&old);
    for (o, n) in [
        ("--startup-s 20", "--startup 20s"),
        ("--noise-pct 3", "--noise 3%"),
        ("--slo-p99-ms 250", "--slo-p99 250ms"),
        ("--cold-s 5", "--cold 5s"),
        ("--cold-capacity-pct 50", "--cold-capacity 50%"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning:") && l.contains(o) && l.contains(n)),
            "no warning for {o} naming {n}:\n{err}"
        );
    }
    let new = run(&[
        "autoscale",
        "simulate",
        "--trace",
        trace,
        "--startup",
        "20s",
        "--noise",
        "3%",
        "--slo-p99",
        "250ms",
        "--cold",
        "5s",
        "--cold-capacity",
        "50%",
        "--json",
        "-",
    ]);
    assert!(new.status.success(), "{}", stderr(&new));
    assert!(!stderr(&new).contains("warning"), "{}", stderr(&new));
    assert_eq!(stdout(&old), stdout(&new), "old and new spellings differ");
    let json: serde_json::Value = serde_json::from_slice(&new.stdout).unwrap();
    assert_eq!(json["model"]["startup_s"], 20);
    assert_eq!(json["model"]["slo_p99_ms"], 250.0);

    // Both spellings at once are refused.
    let both = run(&[
        "autoscale",
        "simulate",
        "--trace",
        trace,
        "--startup",
        "20s",
        "--startup-s",
        "20",
    ]);
    assert_eq!(both.status.code(), Some(2));

    // audit --format json: still JSON on stdout, with a note pointing at --json.
    let dir = temp_dir("grammar-audit");
    std::fs::write(dir.join("app.py"), "sessions = {}\n").unwrap();
    let a = run(&["audit", dir.to_str().unwrap(), "--format", "json"]);
    let _: serde_json::Value = serde_json::from_slice(&a.stdout).expect("JSON on stdout");
    assert!(
        stderr(&a).contains("warning: `--format json` is deprecated")
            && stderr(&a).contains("--json FILE"),
        "{}",
        stderr(&a)
    );
    let file = dir.join("audit.json");
    let a2 = run(&[
        "audit",
        dir.to_str().unwrap(),
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(!stderr(&a2).contains("warning"), "{}", stderr(&a2));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        stdout(&a),
        "--json FILE writes what --format json printed"
    );
    assert!(
        stdout(&a2).contains("verdict"),
        "text report still on stdout"
    );

    // advise --p99-bound-ms: warned, same analysis as --p99-bound.
    let ex = advisor_example();
    let old = run(&["advise", "--report", &ex, "--p99-bound-ms", "250"]);
    let new = run(&["advise", "--report", &ex, "--p99-bound", "250ms"]);
    assert!(old.status.success() && new.status.success());
    assert!(
        stderr(&old).contains("`--p99-bound 250ms`"),
        "{}",
        stderr(&old)
    );
    assert_eq!(stdout(&old), stdout(&new));

    // shop -c with the old [shop] section: read, with a warning (the value is then
    // refused, so no server starts); [service] is read without one.
    let f = dir.join("old.toml");
    std::fs::write(&f, "[shop]\npool_size = 0\n").unwrap();
    let o = run(&["shop", "-c", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("[shop] config section is deprecated")
            && stderr(&o).contains("pool_size"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&f, "[service]\nname = \"shop\"\npool_size = 0\n").unwrap();
    let o = run(&["shop", "-c", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pool_size"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn new_spellings_refuse_ambiguous_values() {
    let trace = traces().join("step.csv");
    let trace = trace.to_str().unwrap();
    let o = run(&["autoscale", "simulate", "--trace", trace, "--startup", "30"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs a unit"), "{}", stderr(&o));
    let o = run(&["autoscale", "simulate", "--trace", trace, "--noise", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs a % sign"), "{}", stderr(&o));
    let o = run(&["lb", "--strategy", "fastest"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("p2c_peak_ewma"),
        "lists the strategies: {}",
        stderr(&o)
    );
    let o = run(&[
        "load",
        "http://127.0.0.1:1/",
        "--rate",
        "1",
        "--progress",
        "fancy",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lines"), "{}", stderr(&o));
}

/// `load -c N` (connections) still works for one release, warns, and gives way to
/// `--connections`; a bare `--duration 1` is read as seconds with a warning.
#[test]
fn load_dash_c_is_deprecated_for_connections() {
    let addr = free_addr();
    let _backend = ChildGuard::spawn(
        "backend",
        scaleout().args(["backend", "--listen", &addr.to_string()]),
    );
    wait_tcp(addr, Duration::from_secs(10));
    let url = format!("http://{addr}/");
    let o = run(&[
        "load",
        &url,
        "--closed-loop",
        "-c",
        "2",
        "--duration",
        "1",
        "--progress",
        "off",
        "--json",
        "-",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: `-c 2` is deprecated") && err.contains("--connections 2"),
        "{err}"
    );
    assert!(
        err.contains("`--duration 1` (a duration without a unit) is deprecated")
            && err.contains("`--duration 1s`"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("only JSON");
    assert_eq!(report["connections_opened"], 2, "{report}");
    let o = run(&[
        "load",
        &url,
        "-c",
        "2",
        "--connections",
        "3",
        "--closed-loop",
    ]);
    assert_eq!(o.status.code(), Some(2), "both spellings at once");
}

fn no_leaks(what: &str, text: &str) {
    assert!(!text.contains("\x1b["), "{what}: ANSI codes\n{text}");
    for leak in ["Some(", "None", "{exe}", "{data_dir}", "{addr}", "{id}"] {
        assert!(!text.contains(leak), "{what}: shows {leak}\n{text}");
    }
}

/// Polls `f` until it holds or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lb` with an admin listener, stderr to a pipe: no colour codes, no `Some(...)`; with
/// `--log-format json` every line is a JSON object.
#[test]
fn lb_output_in_a_pipe_is_plain_and_json_on_request() {
    let backend = free_addr();
    let _b = ChildGuard::spawn(
        "backend",
        scaleout().args(["backend", "--listen", &backend.to_string()]),
    );
    wait_tcp(backend, Duration::from_secs(10));
    for json in [false, true] {
        let (listen, admin) = (free_addr(), free_addr());
        let mut cmd = scaleout();
        if json {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args([
            "lb",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--admin-token",
            "a-long-enough-admin-token-for-tests",
            "--backend",
            &format!("http://{backend}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("spawn lb");
        let pid = child.id();
        wait_tcp(listen, Duration::from_secs(10));
        wait_tcp(admin, Duration::from_secs(10));
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let out = child.wait_with_output().expect("lb exits");
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        no_leaks("lb stderr", &err);
        assert!(
            err.contains(&admin.to_string()),
            "names the admin address: {err}"
        );
        if json {
            let lines: Vec<serde_json::Value> = err
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str(l).expect("a JSON log line"))
                .collect();
            assert!(
                lines
                    .iter()
                    .any(|l| l["fields"]["message"] == "balancer running"
                        && l["fields"]["admin"] == admin.to_string()
                        && l["level"] == "INFO"),
                "{err}"
            );
        } else {
            assert!(err.contains("balancer running"), "{err}");
        }
    }
}

/// `up` with the shop: the banner fills its placeholders, the console and the instance
/// log files carry no colour codes and no `Some(...)`, `NO_COLOR` or not.
#[test]
fn up_banner_and_instance_logs_are_plain() {
    let dir = temp_dir("grammar-up");
    let (listen, admin): (SocketAddr, SocketAddr) = (free_addr(), free_addr());
    let data = dir.join("data");
    let cfg = dir.join("scaleout.toml");
    std::fs::write(
        &cfg,
        format!(
            "[balancer]\nlisten = \"{listen}\"\n[balancer.admin]\nlisten = \"{admin}\"\n\
             token = \"test-token-123456\"\n[fleet]\ninstances = 1\ndata_dir = \"{}\"\n\
             stop_grace_ms = 3000\ndrain_grace_ms = 1000\n\
             [autoscale]\nmin_instances = 1\nmax_instances = 1\n",
            data.display()
        ),
    )
    .unwrap();
    let log = dir.join("up.log");
    let mut cmd = scaleout();
    cmd.args([
        "up",
        "-c",
        cfg.to_str().unwrap(),
        "--no-envelopes",
        "--status-every",
        "0s",
    ])
    .current_dir(&dir)
    .stdout(std::fs::File::create(dir.join("up.out")).unwrap())
    .stderr(std::fs::File::create(&log).unwrap());
    let mut up = ChildGuard::spawn("scaleout up", &mut cmd);
    wait_http_ok(listen, "/readyz", Duration::from_secs(120));
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the instance ready line", Duration::from_secs(60), || {
        text().contains("instance ready")
    });
    up.signal("TERM");
    up.wait_exit(Duration::from_secs(60)).expect("up stops");
    let console = text();
    no_leaks("up console", &console);
    assert!(
        console.contains(&format!("sqlite:{}/shop.db", data.display())),
        "the banner shows the real database path: {console}"
    );
    let instance_log = std::fs::read_to_string(data.join("logs/i-1.log")).expect("i-1.log");
    assert!(!instance_log.is_empty());
    no_leaks("instance log", &instance_log);
}

/// A refused PostgreSQL or Redis port: one line naming the store, the URL (without its
/// password) and the reason, once.
#[test]
fn refused_stores_are_named_once_with_their_url() {
    let dir = temp_dir("grammar-refused");
    let port = testkit::free_port();
    let pg = format!("postgres://shop:hunter2-secret@127.0.0.1:{port}/shop");
    let o = run(&[
        "shop",
        "--listen",
        &free_addr().to_string(),
        "--db",
        &pg,
        "--jwt-secret-file",
        dir.join("jwt").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let shown = format!("postgres://shop:***@127.0.0.1:{port}/shop");
    assert!(
        err.contains(&format!("cannot connect to PostgreSQL primary at {shown}")),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");

    let port = testkit::free_port();
    let started = Instant::now();
    let o = run(&[
        "shop",
        "--listen",
        &free_addr().to_string(),
        "--db",
        &format!("sqlite:{}", dir.join("shop.db").display()),
        "--redis",
        &format!("redis://:pw@127.0.0.1:{port}"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot connect to Redis at redis://:***@127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    // The reason, not a timeout: a refused port is known at once (the store timeout is
    // 5 s; seeding the SQLite catalog comes before and is bounded well below 60 s).
    assert!(!err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// `autoscale simulate` explains every metric and shows the HPA clone beside it.
#[test]
fn simulate_explains_its_metrics() {
    let trace = traces().join("flash-crowd.csv");
    let o = run(&["autoscale", "simulate", "--trace", trace.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("accuracy_over_pct"))
        .expect("accuracy_over_pct line");
    assert!(
        line.contains("surplus") && line.contains("% of the instances needed"),
        "{line}"
    );
    assert!(text.contains("HPA clone"), "{text}");
    assert!(text.contains("metric") && text.contains("hpa"), "{text}");
    no_leaks("simulate", &text);
}
