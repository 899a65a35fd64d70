//! Fuzzes the request handling that is our own code: the proxy's header rewriting
//! (`proxy::headers`), on arbitrary header maps.
//!
//! Properties: never panics; after `strip_hop_by_hop` no hop-by-hop header (nor any
//! header the `Connection` header named) is left, except `Upgrade` + `Connection: upgrade`
//! when the upgrade is kept; `add_forwarded` always leaves a valid `X-Forwarded-For` that
//! ends with the client address; `ensure_request_id` always leaves a valid id.
#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use proxy::headers;

#[derive(Debug, Arbitrary)]
struct Input {
    headers: Vec<(String, Vec<u8>)>,
    client: [u8; 16],
    v4: bool,
    authority: Option<String>,
    keep_upgrade: bool,
    random: u128,
    cookie_name: String,
}

fuzz_target!(|input: Input| {
    let mut map = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    let _ = headers::cookie_value(&map, &input.cookie_name);
    let upgrade = headers::is_upgrade_request(&map);

    // Names the Connection header lists, before stripping.
    let listed: Vec<String> = map
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| {
            s.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    let keep = input.keep_upgrade && upgrade;
    headers::strip_hop_by_hop(&mut map, keep);
    for name in ["keep-alive", "te", "trailer", "transfer-encoding"] {
        assert!(!map.contains_key(name), "{name} survived stripping");
    }
    for name in map.keys() {
        assert!(
            !name.as_str().starts_with("proxy-"),
            "{name} survived stripping"
        );
    }
    if !keep {
        assert!(!map.contains_key("upgrade"), "upgrade survived stripping");
        assert!(
            !map.contains_key("connection"),
            "connection survived stripping"
        );
        for name in &listed {
            assert!(
                !map.contains_key(name.as_str()),
                "{name} (listed in Connection) survived"
            );
        }
    }

    let ip = if input.v4 {
        IpAddr::from([
            input.client[0],
            input.client[1],
            input.client[2],
            input.client[3],
        ])
    } else {
        IpAddr::from(input.client)
    };
    let client = headers::ClientInfo::new(ip);
    headers::add_forwarded(&mut map, &client, input.authority.as_deref());
    let xff = map
        .get(&headers::X_FORWARDED_FOR)
        .expect("x-forwarded-for set");
    let xff = xff.to_str().expect("x-forwarded-for is text");
    assert!(
        xff.ends_with(&ip.to_string()),
        "{xff} does not end with {ip}"
    );
    assert!(map.contains_key(&headers::X_FORWARDED_PROTO));

    let id = headers::ensure_request_id(&mut map, input.random);
    assert!(headers::is_valid_request_id(&id));
    assert_eq!(map.get(&headers::X_REQUEST_ID), Some(&id));
});
