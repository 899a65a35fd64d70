//! Properties of the fast path's HTTP/1.1 codec (`proxy::h1::parse`), checked on any
//! input. Shared by the cargo-fuzz target `h1_request` and the bounded, seeded stable
//! test `crates/proxy/tests/h1_fuzz.rs` (same seeds, `fuzz/seeds/h1_request/`).
//!
//! 1. No input panics the parser, the rewriter, the response parser or the chunk decoder.
//! 2. A head is acted on only when complete: every strict prefix of an accepted head
//!    parses as incomplete.
//! 3. An accepted head is unambiguous by a naive, independent reading of its bytes: no
//!    LF without CR, no folded line, not both Content-Length and Transfer-Encoding, at
//!    most one Host, Content-Length values all equal.
//! 4. The rewritten head parses again, whole, to the same method, target and framing,
//!    with exactly one Host (the effective one), one X-Forwarded-For, one X-Request-Id,
//!    and no hop-by-hop header.
//! 5. The chunk decoder gives the same data, length used and verdict however its input is
//!    split.

use proxy::h1::parse::{
    ChunkedDecoder, Forwarding, Framing, Limits, header_storage, parse_request, parse_response,
    write_request_head,
};

const LIMITS: Limits = Limits {
    max_head_bytes: 4096,
    max_headers: 64,
    max_method_bytes: 32,
};

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn name_is(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()] == b':'
}

fn value_of<'a>(line: &'a [u8], name: &str) -> &'a [u8] {
    line[name.len() + 1..].trim_ascii()
}

/// Checks every property on `data` (the first byte picks split points).
pub fn check(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut storage = header_storage();
    let parsed = parse_request(input, &LIMITS, &mut storage);
    if let Ok(Some(req)) = parsed {
        let head = &input[..req.info.head_len];
        // 2. Prefixes are incomplete.
        for cut in [
            split as usize % head.len().max(1),
            head.len() / 2,
            head.len().saturating_sub(1),
        ] {
            if cut < head.len() {
                let mut st = header_storage();
                let p = parse_request(&head[..cut], &LIMITS, &mut st);
                assert!(
                    matches!(p, Ok(None)),
                    "prefix {cut} of an accepted head: {p:?}"
                );
            }
        }
        // 3. A naive reading agrees that the head is unambiguous.
        for (i, &b) in head.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && head[i - 1] == b'\r', "LF without CR accepted");
            }
            if b == b'\r' {
                assert!(head.get(i + 1) == Some(&b'\n'), "bare CR accepted");
            }
        }
        let mut cls = Vec::new();
        let (mut tes, mut hosts) = (0, 0);
        for (n, line) in lines(head).enumerate() {
            if n > 0 && !line.is_empty() {
                assert!(line[0] != b' ' && line[0] != b'\t', "folded line accepted");
            }
            if name_is(line, "content-length") {
                cls.push(value_of(line, "content-length").to_vec());
            }
            tes += usize::from(name_is(line, "transfer-encoding"));
            hosts += usize::from(name_is(line, "host"));
        }
        assert!(
            cls.is_empty() || tes == 0,
            "both Content-Length and Transfer-Encoding accepted"
        );
        assert!(
            cls.windows(2).all(|w| w[0] == w[1]),
            "different Content-Lengths accepted"
        );
        assert!(hosts <= 1, "several Host headers accepted");
        match req.info.framing {
            Framing::Length(n) => {
                let first = cls.first().and_then(|v| std::str::from_utf8(v).ok());
                assert_eq!(first.and_then(|v| v.parse::<u64>().ok()), Some(n));
            }
            Framing::Chunked => assert_eq!(tes, 1),
            Framing::Empty => assert!(cls.is_empty() && tes == 0),
        }
        // 4. The rewrite parses again to the same request.
        let mut out = Vec::new();
        let fwd = Forwarding {
            client_ip: b"192.0.2.1",
            proto: b"http",
            listener: b"127.0.0.1:80",
            random: u128::from(split),
        };
        write_request_head(&req, &fwd, &mut out);
        let mut st = header_storage();
        let big = Limits {
            max_head_bytes: 1 << 20,
            max_headers: 1024,
            ..LIMITS
        };
        let again = match parse_request(&out, &big, &mut st) {
            Ok(Some(r)) => r,
            other => panic!(
                "rewritten head refused: {other:?}\n{}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(again.info.head_len, out.len());
        assert_eq!(again.method, req.method);
        assert_eq!(again.info.framing, req.info.framing);
        let want_path = if req.slash {
            format!("/{}", req.path)
        } else {
            req.path.to_string()
        };
        assert_eq!(again.path, want_path);
        assert_eq!(again.authority, None, "absolute form forwarded");
        let want_host = req.effective_host().unwrap_or(fwd.listener);
        assert_eq!(again.host, Some(want_host));
        let count = |name: &str| {
            again
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .count()
        };
        assert_eq!(count("host"), 1);
        assert_eq!(count("x-forwarded-for"), 1);
        assert_eq!(count("x-request-id"), 1);
        for hop in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "expect",
            "proxy-authorization",
        ] {
            assert_eq!(count(hop), 0, "{hop} forwarded");
        }
    }
    // 1 and 5: responses and chunked bodies.
    let mut st = header_storage();
    let _ = parse_response(input, split & 1 == 1, &mut st);
    let whole = decode(input, input.len());
    let pieces = decode(input, 1 + split as usize % 7);
    assert_eq!(
        whole, pieces,
        "chunk decoding depends on how the input is split"
    );
}

fn decode(input: &[u8], step: usize) -> (Vec<u8>, usize, bool, bool) {
    let mut d = ChunkedDecoder::default();
    let mut data = Vec::new();
    let mut used = 0;
    for piece in input.chunks(step.max(1)) {
        match d.feed(piece, |b| data.extend_from_slice(b)) {
            Ok(n) => used += n,
            Err(_) => return (Vec::new(), 0, false, true),
        }
        if d.is_done() {
            break;
        }
    }
    (data, used, d.is_done(), false)
}
