//! Audits a path with the library directly and prints the text report (or JSON with
//! `--json`): `cargo run --release -p audit --example scan -- PATH`. Used for the
//! precision/recall and speed measurements in BENCHMARKS.md without building the whole
//! `scaleout` binary. Prints the wall time to stderr.

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: scan PATH [--json] [--threads N]");
    let mut json = false;
    let mut threads = 0;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--threads N")
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let options = audit::Options {
        threads,
        ..audit::Options::default()
    };
    let started = std::time::Instant::now();
    let report = audit::audit_path(std::path::Path::new(&path), &options).expect("audit");
    let elapsed = started.elapsed();
    if json {
        println!("{}", audit::render_json(&report));
    } else {
        print!("{}", audit::render_text(&report));
    }
    eprintln!(
        "scanned {} files, {} lines in {:.3} s ({} threads)",
        report.files_scanned,
        report.lines_scanned,
        elapsed.as_secs_f64(),
        if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        }
    );
}
