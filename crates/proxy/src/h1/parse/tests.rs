use super::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 8192,
    max_headers: 64,
    max_method_bytes: 32,
};

fn parse(buf: &[u8]) -> Result<Option<HeadInfo>, RequestRule> {
    let mut storage = header_storage();
    parse_request(buf, &LIMITS, &mut storage).map(|r| r.map(|r| r.info))
}

fn rule(buf: &[u8]) -> RequestRule {
    match parse(buf) {
        Err(r) => r,
        other => panic!("{:?} accepted: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// Rewrites `buf` as the fast path would and returns the upstream head as text.
fn rewrite(buf: &[u8]) -> String {
    let mut storage = header_storage();
    let req = parse_request(buf, &LIMITS, &mut storage).unwrap().unwrap();
    let mut out = Vec::new();
    let fwd = Forwarding {
        client_ip: b"10.0.0.9",
        proto: b"http",
        listener: b"127.0.0.1:8080",
        random: 7,
    };
    write_request_head(&req, &fwd, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn an_ordinary_request_is_accepted_with_its_framing() {
    let i = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(i.framing, Framing::Empty);
    assert!(i.keep_alive && !i.http10 && !i.websocket);
    let i = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap()
        .unwrap();
    assert_eq!(i.framing, Framing::Length(5));
    assert_eq!(i.head_len, 47);
    let i = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(i.framing, Framing::Chunked);
    // Identical duplicate lengths are one length.
    let i = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(i.framing, Framing::Length(3));
    let i = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(i.http10 && !i.keep_alive);
    let i = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(i.keep_alive);
    let i = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!i.keep_alive);
}

#[test]
fn partial_heads_ask_for_more() {
    for p in [
        &b"GE"[..],
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r",
    ] {
        assert_eq!(parse(p), Ok(None), "{:?}", String::from_utf8_lossy(p));
    }
}

#[test]
fn smuggling_vectors_are_refused_with_the_rfc_status() {
    use RequestRule::*;
    let cases: &[(&[u8], RequestRule)] = &[
        // CL + TE: read as two different bodies by different servers.
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", ConflictingFraming),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", ConflictingFraming),
        // Different lengths, lists, signs, garbage.
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", InvalidContentLength),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\n", InvalidContentLength),
        // Found by the seeded fuzz run: numerically equal but not identical duplicates.
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\n", InvalidContentLength),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n", InvalidContentLength),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x4\r\n\r\n", InvalidContentLength),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", InvalidContentLength),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", InvalidContentLength),
        // Transfer codings other than one chunked; TE on 1.0.
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n", UnsupportedTransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", UnsupportedTransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", UnsupportedTransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", UnsupportedTransferEncoding),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingOnHttp10),
        // obs-fold, whitespace before the colon, invalid names.
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", Malformed),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", Malformed),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX(A): 1\r\n\r\n", Malformed),
        (b"GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", Malformed),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", Malformed),
        (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", Malformed),
        (b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", Malformed),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", Malformed),
        // Bare LF and bare CR line endings.
        (b"GET / HTTP/1.1\nHost: x\n\n", BareLineEnding),
        (b"GET / HTTP/1.1\r\nHost: x\n\r\n", BareLineEnding),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\n", BareLineEnding),
        (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", BareLineEnding),
        (b"GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", BareLineEnding),
        (b"GET / HTTP/1.1\rHost: x\r\n\r\n", BareLineEnding),
        // Host rules.
        (b"GET / HTTP/1.1\r\n\r\n", MissingHost),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", DuplicateHost),
        (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", DuplicateHost),
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", EmptyHost),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHost),
        (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", InvalidHost),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", InvalidHost),
        (b"GET http://a/ HTTP/1.1\r\n\r\n", MissingHost),
        (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", InvalidHost),
        (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", InvalidHost),
        // Targets.
        (b"GET a HTTP/1.1\r\nHost: x\r\n\r\n", InvalidTarget),
        (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", InvalidTarget),
        (b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", InvalidTarget),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", InvalidTarget),
        // Methods, expectations.
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Connect),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 101-whatever\r\n\r\n", UnsupportedExpectation),
    ];
    for (req, want) in cases {
        assert_eq!(rule(req), *want, "{:?}", String::from_utf8_lossy(req));
        assert!(want.status().is_client_error() || want.status().is_server_error());
    }
}

#[test]
fn heads_past_the_limits_get_431_and_long_methods_501() {
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(rule(&big), RequestRule::HeadTooLarge);
    // Still incomplete but already past the limit.
    assert_eq!(rule(&big[..8500]), RequestRule::HeadTooLarge);
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..70 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(rule(&many), RequestRule::TooManyHeaders);
    let mut long = vec![b'M'; 40];
    long.extend_from_slice(b" / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(rule(&long), RequestRule::MethodTooLong);
    assert_eq!(RequestRule::HeadTooLarge.status().as_u16(), 431);
    assert_eq!(RequestRule::MethodTooLong.status().as_u16(), 501);
}

#[test]
fn the_rewritten_head_is_unambiguous_and_carries_the_forwarded_headers() {
    let up = rewrite(
        b"POST /p?q=1 HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
          Keep-Alive: 5\r\nProxy-Authorization: p\r\nTE: trailers\r\nContent-Length: 2\r\n\
          X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Request-Id: abc\r\n\
          Expect: 100-continue\r\nAccept: */*\r\n\r\n",
    );
    assert!(
        up.starts_with("POST /p?q=1 HTTP/1.1\r\nhost: shop\r\n"),
        "{up}"
    );
    let lower = up.to_ascii_lowercase();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te:",
        "expect",
    ] {
        assert!(!lower.contains(gone), "{gone} forwarded: {up}");
    }
    assert!(up.contains("accept: */*\r\n") || up.contains("Accept: */*\r\n"));
    assert!(
        up.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"),
        "{up}"
    );
    assert!(up.contains("x-forwarded-proto: http\r\n"));
    assert!(up.contains("x-forwarded-host: shop\r\n"));
    assert!(up.contains("x-request-id: abc\r\n"));
    assert_eq!(lower.matches("content-length").count(), 1);
    assert!(up.ends_with("content-length: 2\r\n\r\n"), "{up}");
    // The rewritten head parses to the same request.
    let mut storage = header_storage();
    let again = parse_request(up.as_bytes(), &LIMITS, &mut storage)
        .unwrap()
        .unwrap();
    assert_eq!(again.info.framing, Framing::Length(2));
    assert_eq!(again.method, "POST");
    assert_eq!(again.path, "/p?q=1");
}

#[test]
fn absolute_form_forwards_its_authority_as_host_in_origin_form() {
    let up = rewrite(b"GET http://Shop:80?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert!(
        up.starts_with("GET /?x=1 HTTP/1.1\r\nhost: Shop:80\r\n"),
        "{up}"
    );
    assert!(!up.contains("other"), "{up}");
    assert!(up.contains("x-forwarded-host: Shop:80\r\n"));
    let up = rewrite(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(up.starts_with("OPTIONS * HTTP/1.1\r\n"), "{up}");
    // HTTP/1.0 without Host: the listener.
    let up = rewrite(b"GET / HTTP/1.0\r\n\r\n");
    assert!(up.contains("host: 127.0.0.1:8080\r\n"), "{up}");
    // A generated id when the client's is missing or invalid.
    let up = rewrite(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: has space\r\n\r\n");
    assert!(!up.contains("has space"));
    assert_eq!(up.matches("x-request-id: ").count(), 1);
}

fn response(buf: &[u8], head: bool) -> Result<Option<(u16, BodyKind, bool)>, BadResponse> {
    let mut storage = header_storage();
    parse_response(buf, head, &mut storage).map(|r| r.map(|r| (r.status, r.body, r.reusable)))
}

#[test]
fn response_framing_follows_rfc_9112_section_6_3() {
    let ok = |b: &[u8], head| response(b, head).unwrap().unwrap();
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        (200, BodyKind::Length(2), true)
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true),
        (200, BodyKind::Empty, true)
    );
    assert_eq!(
        ok(b"HTTP/1.1 204 No Content\r\n\r\n", false),
        (204, BodyKind::Empty, true)
    );
    assert_eq!(
        ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        ),
        (200, BodyKind::Chunked, true)
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\n\r\n", false),
        (200, BodyKind::UntilClose, false)
    );
    assert_eq!(
        ok(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false
        ),
        (200, BodyKind::Length(0), false)
    );
    assert_eq!(
        ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        (200, BodyKind::Length(0), false)
    );
    assert_eq!(ok(b"HTTP/1.1 100 Continue\r\n\r\n", false).0, 100);
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ] {
        assert_eq!(response(bad, false).unwrap_err(), BadResponse::Framing);
    }
    assert_eq!(
        response(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", false).unwrap_err(),
        BadResponse::Malformed
    );
    assert_eq!(
        response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).unwrap_err(),
        BadResponse::UnexpectedUpgrade
    );
}

#[test]
fn response_heads_are_rewritten_with_one_framing_header() {
    let mut storage = header_storage();
    let raw = b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nX-App: a\r\n\r\n";
    let r = parse_response(raw, false, &mut storage).unwrap().unwrap();
    let mut out = Vec::new();
    let (framing, close) = write_response_head(&r, false, true, Some(b"lb=a"), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(framing, ClientBody::Chunked);
    assert!(!close);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nX-App: a\r\nset-cookie: lb=a\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // To an HTTP/1.0 client a chunked body is decoded and the connection closes after it.
    let mut out = Vec::new();
    let (framing, close) = write_response_head(&r, true, true, None, &mut out);
    assert_eq!(framing, ClientBody::UntilClose { dechunk: true });
    assert!(close);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("connection: close\r\n")
    );
}

fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), BadChunk> {
    let mut d = ChunkedDecoder::default();
    let mut data = Vec::new();
    let mut used = 0;
    for piece in input.chunks(step.max(1)) {
        let n = d.feed(piece, |b| data.extend_from_slice(b))?;
        used += n;
        if d.is_done() {
            return Ok((data, used));
        }
    }
    Err(BadChunk)
}

#[test]
fn chunked_decoding_is_strict_and_split_anywhere() {
    let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\nNEXT";
    for step in 1..body.len() {
        let (data, used) = decode_all(body, step).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(used, body.len() - 4, "step {step}");
    }
    for bad in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"g\r\n",
        b"\r\n",
        b"-1\r\n",
        b"1234567890abcdef0\r\n",
        b"0\r\nTrailer: t\n\r\n",
        b"0\r\n\n",
        b"0\r\n folded\r\n\r\n",
    ] {
        assert!(
            decode_all(bad, 1).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(decode_all(bad, bad.len()).is_err());
    }
}
