use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn strips_hop_by_hop_and_connection_listed() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("te", "trailers"),
        ("trailer", "x-t"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic x"),
        ("proxy-connection", "keep-alive"),
        ("x-keep", "yes"),
        ("host", "example"),
    ]);
    strip_hop_by_hop(&mut h, false);
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(h.contains_key("x-keep") && h.contains_key("host"));
}

#[test]
fn upgrade_is_kept_when_asked() {
    let mut h = map(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("keep-alive", "1"),
    ]);
    assert!(is_upgrade_request(&h));
    strip_hop_by_hop(&mut h, true);
    assert_eq!(h.get("upgrade").unwrap(), "websocket");
    assert_eq!(h.get("connection").unwrap(), "upgrade");
    assert!(!h.contains_key("keep-alive"));
}

#[test]
fn not_an_upgrade_without_connection_token() {
    let h = map(&[("upgrade", "websocket")]);
    assert!(!is_upgrade_request(&h));
}

#[test]
fn forwarded_headers_append_chain_and_copy_host() {
    let client = ClientInfo::new("10.1.2.3".parse().unwrap());
    let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("host", "shop.example")]);
    add_forwarded(&mut h, &client, None);
    assert_eq!(h.get("x-forwarded-for").unwrap(), "1.1.1.1, 10.1.2.3");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example");

    let mut h2 = HeaderMap::new();
    add_forwarded(&mut h2, &client, Some("h2.example:8080"));
    assert_eq!(h2.get("x-forwarded-for").unwrap(), "10.1.2.3");
    assert_eq!(h2.get("host").unwrap(), "h2.example:8080");
    assert_eq!(h2.get("x-forwarded-host").unwrap(), "h2.example:8080");
}

#[test]
fn request_id_kept_or_generated() {
    let mut h = map(&[("x-request-id", "abc-123")]);
    assert_eq!(ensure_request_id(&mut h, 7), "abc-123");
    let mut h = HeaderMap::new();
    let id = ensure_request_id(&mut h, 0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    assert_eq!(id.len(), 36);
    assert_eq!(h.get("x-request-id").unwrap(), &id);
    let other = ensure_request_id(&mut HeaderMap::new(), 99);
    assert_ne!(id, other);
    // Too long or invisible characters: replaced.
    let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
    let mut h = map(&[("x-request-id", long.as_str())]);
    assert_ne!(ensure_request_id(&mut h, 1), long.as_str());
}

#[test]
fn cookie_lookup() {
    let h = map(&[("cookie", "a=1; lb=b2 ; c=3")]);
    assert_eq!(cookie_value(&h, "lb"), Some("b2"));
    assert_eq!(cookie_value(&h, "zz"), None);
}

#[test]
fn request_rules_refuse_connect_bad_host_and_long_methods() {
    use http::{Method, Version};
    let mut one = HeaderMap::new();
    one.insert(HOST, HeaderValue::from_static("a"));
    let mut two = one.clone();
    two.append(HOST, HeaderValue::from_static("b"));
    let none = HeaderMap::new();
    assert_eq!(
        check_request(&Method::GET, Version::HTTP_11, &one, 32),
        Ok(())
    );
    assert_eq!(
        check_request(&Method::CONNECT, Version::HTTP_11, &one, 32),
        Err(RequestRule::Connect)
    );
    assert_eq!(
        check_request(&Method::GET, Version::HTTP_11, &none, 32),
        Err(RequestRule::MissingHost)
    );
    assert_eq!(
        check_request(&Method::GET, Version::HTTP_10, &none, 32),
        Ok(())
    );
    assert_eq!(
        check_request(&Method::GET, Version::HTTP_2, &none, 32),
        Ok(())
    );
    for v in [Version::HTTP_10, Version::HTTP_11] {
        assert_eq!(
            check_request(&Method::GET, v, &two, 32),
            Err(RequestRule::DuplicateHost)
        );
    }
    let long = Method::from_bytes(&[b'A'; 33]).unwrap();
    assert_eq!(
        check_request(&long, Version::HTTP_11, &one, 32),
        Err(RequestRule::MethodTooLong)
    );
    assert_eq!(RequestRule::MethodTooLong.status(), 501);
    assert_eq!(RequestRule::Connect.status(), 405);
    assert_eq!(RequestRule::DuplicateHost.status(), 400);
}

#[test]
fn only_websocket_upgrades_pass() {
    // h2c (and anything else) is not passed through: a 101 would open a raw tunnel to
    // the backend that bypasses every per-request rule of the balancer.
    for proto in ["h2c", "websocket, h2c", "TLS/1.0", ""] {
        let mut h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", proto),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        assert!(!is_upgrade_request(&h), "{proto:?}");
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("upgrade"), "{proto:?}");
        assert!(!h.contains_key("http2-settings"), "{proto:?}");
    }
    let h = map(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
    ]);
    assert!(is_upgrade_request(&h));
}

#[test]
fn empty_host_and_transfer_codings_other_than_chunked_are_refused() {
    use http::{Method, Version};
    let with = |pairs: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        check_request(&Method::POST, Version::HTTP_11, &h, 32)
    };
    assert_eq!(with(&[("host", "")]), Err(RequestRule::EmptyHost));
    assert_eq!(with(&[("host", " ")]), Err(RequestRule::EmptyHost));
    for te in [
        "identity, chunked",
        "chunked, identity",
        "gzip",
        "xchunked",
        "",
    ] {
        assert_eq!(
            with(&[("host", "a"), ("transfer-encoding", te)]),
            Err(RequestRule::UnsupportedTransferEncoding),
            "{te:?}"
        );
    }
    for te in ["chunked", "CHUNKED", " Chunked "] {
        assert_eq!(
            with(&[("host", "a"), ("transfer-encoding", te)]),
            Ok(()),
            "{te:?}"
        );
    }
    assert_eq!(
        RequestRule::UnsupportedTransferEncoding.status(),
        http::StatusCode::NOT_IMPLEMENTED
    );
}

#[test]
fn the_targets_authority_wins_over_host_without_userinfo() {
    let client = ClientInfo::new("10.1.2.3".parse().unwrap());
    let mut h = map(&[("host", "b.example")]);
    add_forwarded(&mut h, &client, Some("a.example"));
    assert_eq!(h.get_all("host").iter().count(), 1);
    assert_eq!(h.get("host").unwrap(), "a.example");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "a.example");
    let mut h = map(&[("host", "b.example")]);
    add_forwarded(&mut h, &client, Some("user:pw@a.example:8080"));
    assert_eq!(h.get("host").unwrap(), "a.example:8080");
    // Origin form: Host as sent.
    let mut h = map(&[("host", "b.example")]);
    add_forwarded(&mut h, &client, None);
    assert_eq!(h.get("host").unwrap(), "b.example");
}

#[test]
fn via_names_our_hop_and_a_second_pass_is_a_loop() {
    let token = "scaleout-0123456789abcdef";
    let via = via_value(token);
    let mut h = map(&[("via", "1.0 fred, 1.1 p.example (Apache/1.1)")]);
    assert_eq!(check_loop(&h, token), Ok(()));
    add_via(&mut h, &via);
    assert_eq!(h.get_all("via").iter().count(), 2);
    assert_eq!(check_loop(&h, token), Err(RequestRule::Loop));
    assert_eq!(RequestRule::Loop.status().as_u16(), 508);
    // Another balancer's token, or ours as a comment or a prefix, is not a loop.
    let other = map(&[(
        "via",
        "1.1 scaleout-ffff, 1.1 x (scaleout-0123456789abcdef) ",
    )]);
    assert_eq!(check_loop(&other, token), Ok(()));
    let prefix = map(&[("via", "1.1 scaleout-0123456789abcdef0")]);
    assert_eq!(check_loop(&prefix, token), Ok(()));
}
