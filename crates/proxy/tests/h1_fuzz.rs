//! A bounded, seeded mutation fuzzer for the fast path's HTTP/1.1 codec, runnable on the
//! stable toolchain (cargo-fuzz needs nightly): the seeds of the cargo-fuzz target
//! `h1_request` (request smuggling cases), mutated with the edits that matter to HTTP
//! framing (CR, LF, spaces, colons, commas, digits, NUL, obs-text, duplicated and spliced
//! lines, framing headers), each checked against the same properties as the fuzz target
//! (`fuzz/props/h1_request.rs`).
//!
//! Replay or extend: `SCALEOUT_FUZZ_SEED=<n> SCALEOUT_FUZZ_ITERS=<n> cargo test -p proxy
//! --test h1_fuzz -- --nocapture` (the seed is printed).

#[path = "../../../fuzz/props/h1_request.rs"]
mod props;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BYTES: &[u8] = b"\r\n \t:,;0159aZ-\x00\x7f\x80\xff=\"";
const SNIPPETS: &[&[u8]] = &[
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Host: b\r\n",
    b"Connection: keep-alive, Content-Length\r\n",
    b"\r\n ",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"HTTP/1.0",
    b"http://x:1",
    b"Expect: 100-continue\r\n",
];

fn mutate(rng: &mut SmallRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let edits = 1 + rng.random_range(0..4);
    for _ in 0..edits {
        let len = input.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..=len)
        };
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = BYTES[rng.random_range(0..BYTES.len())];
            }
            1 => input.insert(at, BYTES[rng.random_range(0..BYTES.len())]),
            2 if len > 1 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(8));
                input.drain(i..i + n);
            }
            3 => {
                let s = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
                input.splice(at..at, s.iter().copied());
            }
            4 => {
                // A line of another seed spliced in.
                let other = &seeds[rng.random_range(0..seeds.len())];
                if let Some(line) = other.split(|&b| b == b'\n').nth(rng.random_range(0..6)) {
                    let mut l = line.to_vec();
                    l.push(b'\n');
                    input.splice(at..at, l);
                }
            }
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = input[i].to_ascii_uppercase();
            }
            _ if len > 2 => {
                // Duplicate a span (a repeated header line, more often than not).
                let i = rng.random_range(0..len - 1);
                let n = rng.random_range(1..=(len - i).min(40));
                let span: Vec<u8> = input[i..i + n].to_vec();
                input.splice(at..at, span);
            }
            _ => input.push(b'\n'),
        }
    }
}

#[test]
fn seeded_mutations_of_the_smuggling_corpus_keep_every_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/h1_request");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 20, "seed corpus missing");
    let seed: u64 = std::env::var("SCALEOUT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let iters: u64 = std::env::var("SCALEOUT_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000);
    eprintln!("h1_fuzz: seed {seed}, {iters} iterations (SCALEOUT_FUZZ_SEED to replay)");
    for s in &seeds {
        props::check(s);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = std::time::Instant::now();
    for i in 0..iters {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        let r = std::panic::catch_unwind(|| props::check(&input));
        if let Err(e) = r {
            panic!(
                "seed {seed} iteration {i}: property failed on {:?}: {e:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
    eprintln!(
        "FIGURE h1_fuzz: {iters} mutated inputs from {} seeds, seed {seed}, {:.1} s, no property failed",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}
