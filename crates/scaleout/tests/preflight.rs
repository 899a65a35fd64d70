//! End to end: what `scaleout up` and `scaleout lb` refuse before they start anything,
//! and what `up` shows when an instance fails anyway.
//!
//! - A config the service itself would refuse (`[service] sessions = "redis"` without a
//!   Redis URL, an argument the shop rejects, a program that does not exist): exit 2, the
//!   field or the shop's reason named, nothing listening, nothing written.
//! - An instance that exits at run time: its last log lines on `up`'s console, not only
//!   `exited: exit status: N`.
//! - `scaleout lb` with no backend: refused without an admin API, a warning with one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{ChildGuard, free_addr, temp_dir, wait_tcp};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

fn write_config(dir: &Path, listen: SocketAddr, extra: &str) -> PathBuf {
    let path = dir.join("scaleout.toml");
    std::fs::write(
        &path,
        format!(
            "[balancer]\nlisten = \"{listen}\"\n[fleet]\ndata_dir = \"{}\"\nrestart_backoff_initial_ms = 200\n{extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn up_refuses_a_service_that_would_crash_loop_before_starting_anything() {
    for (extra, named) in [
        (
            "[service]\nsessions = \"redis\"",
            &["service.sessions", "service.redis"][..],
        ),
        (
            "[service]\nargs = [\"--pool-size\", \"0\"]",
            &["pool_size", "would exit at once"][..],
        ),
        (
            "[service]\nargs = [\"--no-such-flag\"]",
            &["--no-such-flag", "would exit at once"][..],
        ),
        (
            "[fleet]\ncommand = [\"/nonexistent/server\", \"{port}\"]",
            &["fleet.command", "/nonexistent/server", "not found"][..],
        ),
    ] {
        let dir = temp_dir("pre-up");
        let listen = free_addr();
        // `[fleet]` may appear once: the command case brings its own table.
        let cfg = if extra.contains("[fleet]") {
            let path = dir.join("scaleout.toml");
            let extra = extra.replace(
                "[fleet]\n",
                &format!("[fleet]\ndata_dir = \"{}\"\n", dir.join("data").display()),
            );
            std::fs::write(
                &path,
                format!("[balancer]\nlisten = \"{listen}\"\n{extra}\n"),
            )
            .unwrap();
            path
        } else {
            write_config(&dir, listen, extra)
        };
        let out = Command::new(exe())
            .args(["up", "-c", cfg.to_str().unwrap(), "--no-envelopes"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        for n in named {
            assert!(err.contains(n), "{extra}: {n} not in: {err}");
        }
        assert!(
            !dir.join("data").exists(),
            "{extra}: nothing written: {err}"
        );
        assert!(
            std::net::TcpListener::bind(listen).is_ok(),
            "{extra}: nothing listened"
        );
    }
}

#[test]
fn a_failing_instance_shows_its_last_log_lines_on_the_console() {
    let dir = temp_dir("pre-crash");
    let listen = free_addr();
    let cfg = write_config(
        &dir,
        listen,
        "command = [\"/bin/sh\", \"-c\", \"echo starting on {port}; echo 'fatal: cannot open the widget store' >&2; exit 3\"]\ninstances = 1\n[autoscale]\nmin_instances = 1\nmax_instances = 1\n",
    );
    let log = dir.join("up.log");
    let mut cmd = Command::new(exe());
    cmd.args([
        "up",
        "-c",
        cfg.to_str().unwrap(),
        "--no-envelopes",
        "--admin",
    ])
    .arg(free_addr().to_string())
    .current_dir(&dir)
    .stderr(std::fs::File::create(&log).unwrap());
    let mut up = ChildGuard::spawn("scaleout up", &mut cmd);
    wait_tcp(listen, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // (The banner quotes the command, so wait for the failure report itself.)
        if text.contains("its last log lines") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    up.signal("INT");
    let _ = up.wait_exit(Duration::from_secs(30));
    assert!(text.contains("exit status: 3"), "{text}");
    let report = text
        .split_once("its last log lines")
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("no failure report with log lines:\n{text}"));
    assert!(
        report.contains("fatal: cannot open the widget store"),
        "the instance's own last words on the console:\n{text}"
    );
    // Its stdout too, with the port it was given filled in.
    assert!(report.contains("starting on "), "{text}");
    assert!(!report.contains("{port}"), "{text}");
    assert!(text.contains("logs/i-"), "where the whole log is: {text}");
}

#[test]
fn lb_with_no_backend_is_refused_without_an_admin_api_and_warned_with_one() {
    let out = Command::new(exe())
        .args(["lb", "--listen", &free_addr().to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no backends"), "{err}");
    assert!(err.contains("--backend"), "{err}");

    let (listen, admin) = (free_addr(), free_addr());
    let dir = temp_dir("pre-lb");
    let log = dir.join("lb.log");
    let mut cmd = Command::new(exe());
    cmd.args([
        "lb",
        "--listen",
        &listen.to_string(),
        "--admin",
        &admin.to_string(),
        "--admin-token",
        "a-long-enough-token",
    ])
    .stderr(std::fs::File::create(&log).unwrap());
    let mut lb = ChildGuard::spawn("scaleout lb", &mut cmd);
    wait_tcp(listen, Duration::from_secs(30));
    lb.signal("INT");
    let status = lb.wait_exit(Duration::from_secs(30)).expect("lb exits");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("warning: no backends"), "{text}");
    assert!(text.contains(&admin.to_string()), "{text}");
}
