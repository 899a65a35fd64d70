//! Header rewriting for forwarded requests and responses, as pure functions over
//! `http::HeaderMap`.
//!
//! These run on the hot path for every request, so they avoid allocation where the input
//! allows it (no `Connection` header means no work for hop-by-hop stripping), and they are
//! pure so a fuzz target can call them with arbitrary header maps. They must never panic on
//! any input and never read the clock, a socket or a global RNG: the random part of a
//! generated request id is passed in.

use std::net::IpAddr;

use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Keep-Alive` (not a constant in `http`).
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The methods the balancer forwards (the `Allow` header of its 405 to CONNECT).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Longest incoming `X-Request-Id` kept as is; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// A request rule broken by a request that is refused before forwarding.
///
/// The hyper path checks the first six on the parsed head ([`check_request`]); the
/// HTTP/1.1 fast path's parser (`h1::parse`) enforces all of them on the raw bytes, before
/// anything is forwarded (RFC 9112: a request whose framing could be read two ways is
/// refused, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRule {
    /// `CONNECT`: the balancer does not tunnel (405, `Allow` lists what it forwards).
    Connect,
    /// HTTP/1.1 without a `Host` header (RFC 9112 3.2: 400).
    MissingHost,
    /// More than one `Host` header (RFC 9112 3.2: 400; a smuggling vector).
    DuplicateHost,
    /// A method longer than `limits.max_method_bytes` (RFC 9112 3: 501).
    MethodTooLong,
    /// A `Host` header with an empty value (an http URI always has an authority; 400).
    EmptyHost,
    /// A `Transfer-Encoding` other than a single `chunked` (RFC 9112 6.1: 501). Codings
    /// such as `identity, chunked` are read differently by different servers, which is
    /// what request smuggling feeds on; nginx answers 501 too.
    UnsupportedTransferEncoding,
    /// The request already passed through this balancer (its `Via` names our hop): a
    /// backend points back at the balancer (RFC 8586 / WebDAV's 508 Loop Detected).
    Loop,
    /// A request line or header field that is not HTTP/1.1 syntax: an invalid header name
    /// (or whitespace before the colon), obs-fold (a line starting with whitespace), a
    /// control character, more than one space between request-line parts (400).
    Malformed,
    /// A line ending in a bare LF or a bare CR instead of CRLF (RFC 9112 2.2: 400; read
    /// differently by different parsers).
    BareLineEnding,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 6.3: 400, never forwarded).
    ConflictingFraming,
    /// A `Content-Length` that is not one decimal number, or several that differ (400).
    InvalidContentLength,
    /// `Transfer-Encoding` on an HTTP/1.0 request (RFC 9112 6.1: faulty framing, 400).
    TransferEncodingOnHttp10,
    /// A `Host` (or absolute-form authority) with characters no authority has (400).
    InvalidHost,
    /// A request target that is neither origin-form (`/path`), absolute-form
    /// (`http://host/path`) nor `*` for OPTIONS, or has a byte outside visible ASCII (400).
    InvalidTarget,
    /// The request head exceeds `limits.max_header_bytes` (431).
    HeadTooLarge,
    /// More header fields than `limits.max_headers` (431).
    TooManyHeaders,
    /// An `Expect` other than `100-continue` (RFC 9110 10.1.1: 417).
    UnsupportedExpectation,
}

impl RequestRule {
    /// The status answered.
    pub fn status(self) -> http::StatusCode {
        match self {
            RequestRule::Connect => http::StatusCode::METHOD_NOT_ALLOWED,
            RequestRule::MissingHost
            | RequestRule::DuplicateHost
            | RequestRule::EmptyHost
            | RequestRule::Malformed
            | RequestRule::BareLineEnding
            | RequestRule::ConflictingFraming
            | RequestRule::InvalidContentLength
            | RequestRule::TransferEncodingOnHttp10
            | RequestRule::InvalidHost
            | RequestRule::InvalidTarget => http::StatusCode::BAD_REQUEST,
            RequestRule::MethodTooLong | RequestRule::UnsupportedTransferEncoding => {
                http::StatusCode::NOT_IMPLEMENTED
            }
            RequestRule::Loop => http::StatusCode::LOOP_DETECTED,
            RequestRule::HeadTooLarge | RequestRule::TooManyHeaders => {
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            RequestRule::UnsupportedExpectation => http::StatusCode::EXPECTATION_FAILED,
        }
    }

    /// A short reason for the client.
    pub fn reason(self) -> &'static str {
        match self {
            RequestRule::Connect => "CONNECT is not supported\n",
            RequestRule::MissingHost => "missing Host header\n",
            RequestRule::DuplicateHost => "more than one Host header\n",
            RequestRule::MethodTooLong => "method too long\n",
            RequestRule::EmptyHost => "empty Host header\n",
            RequestRule::UnsupportedTransferEncoding => "unsupported transfer coding\n",
            RequestRule::Loop => "loop detected: the request came back to this balancer\n",
            RequestRule::Malformed => "malformed request\n",
            RequestRule::BareLineEnding => "lines must end in CRLF\n",
            RequestRule::ConflictingFraming => "both Content-Length and Transfer-Encoding\n",
            RequestRule::InvalidContentLength => "invalid Content-Length\n",
            RequestRule::TransferEncodingOnHttp10 => "Transfer-Encoding on HTTP/1.0\n",
            RequestRule::InvalidHost => "invalid Host\n",
            RequestRule::InvalidTarget => "invalid request target\n",
            RequestRule::HeadTooLarge => "request head too large\n",
            RequestRule::TooManyHeaders => "too many header fields\n",
            RequestRule::UnsupportedExpectation => "unsupported expectation\n",
        }
    }
}

/// Checks a request head against the request rules: no `CONNECT`, exactly one `Host` on
/// HTTP/1.1 (at most one on HTTP/1.0; HTTP/2 carries `:authority` instead), and a method
/// of at most `max_method_bytes`. Pure; never panics.
pub fn check_request(
    method: &http::Method,
    version: http::Version,
    headers: &HeaderMap,
    max_method_bytes: usize,
) -> Result<(), RequestRule> {
    if method.as_str().len() > max_method_bytes {
        return Err(RequestRule::MethodTooLong);
    }
    if method == http::Method::CONNECT {
        return Err(RequestRule::Connect);
    }
    let mut hosts = headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestRule::DuplicateHost);
    }
    if first.is_none() && version == http::Version::HTTP_11 {
        return Err(RequestRule::MissingHost);
    }
    if first.is_some_and(|h| h.as_bytes().iter().all(u8::is_ascii_whitespace)) {
        return Err(RequestRule::EmptyHost);
    }
    for te in headers.get_all(TRANSFER_ENCODING) {
        if !te
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
        {
            return Err(RequestRule::UnsupportedTransferEncoding);
        }
    }
    Ok(())
}

/// Removes hop-by-hop headers: `Connection` and every header it lists, `Keep-Alive`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Upgrade` and every `Proxy-*` header.
///
/// When `keep_upgrade` is true (a WebSocket or other upgrade being passed through), the
/// `Upgrade` header is kept and `Connection: upgrade` is set again after stripping, since the
/// upgrade must reach the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named by `Connection` are hop-by-hop too (RFC 9110 7.6.1). Collect their names
    // only when a Connection header exists: the common case allocates nothing.
    if headers.contains_key(&CONNECTION) {
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(&CONNECTION) {
            let Ok(text) = value.to_str() else { continue };
            for token in text.split(',') {
                let token = token.trim();
                if token.is_empty() {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    if keep_upgrade && name == UPGRADE {
                        continue;
                    }
                    listed.push(name);
                }
            }
        }
        for name in listed {
            headers.remove(&name);
        }
        headers.remove(&CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&TE);
    headers.remove(&TRAILER);
    headers.remove(&TRANSFER_ENCODING);
    if !keep_upgrade {
        headers.remove(&UPGRADE);
    }
    if headers.keys().any(is_proxy_header) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_proxy_header(n))
            .cloned()
            .collect();
        for name in names {
            headers.remove(&name);
        }
    }
    if keep_upgrade && headers.contains_key(&UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn is_proxy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("proxy-")
}

/// Whether a request asks for a WebSocket upgrade that the balancer passes through:
/// `Connection` lists `upgrade` and every `Upgrade` header names only `websocket`.
///
/// Any other upgrade (`h2c`, `TLS/1.0`, …) is not an upgrade to us: its `Upgrade` and
/// `Connection`-listed headers are stripped as hop-by-hop and the request is forwarded
/// as plain HTTP/1.1, as nginx and HAProxy do. Passing `h2c` through would let a client
/// open a raw tunnel to the backend after a 101 and send requests that never meet the
/// balancer's rules (CONNECT, Host, limits, routing).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(&UPGRADE).iter().peekable();
    if upgrades.peek().is_none() {
        return false;
    }
    let only_websocket = upgrades.all(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .all(|t| t.eq_ignore_ascii_case("websocket"))
        })
    });
    only_websocket
        && headers.get_all(&CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// What the balancer knows about the client side of a request, for forwarded headers.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer address of the client connection, pre-rendered as a header value.
    pub client_ip: HeaderValue,
    /// `http` (the balancer terminates no TLS).
    pub proto: HeaderValue,
}

impl ClientInfo {
    /// Client info for a plain-HTTP connection from `ip`.
    pub fn new(ip: IpAddr) -> ClientInfo {
        // An IP address always renders to a valid header value.
        let client_ip = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientInfo {
            client_ip,
            proto: HeaderValue::from_static("http"),
        }
    }
}

/// Adds `X-Forwarded-For` (appending the client to an existing chain), sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host`, and sets `Host`.
///
/// `authority` is the authority of the request target when it has one: an absolute-form
/// target in HTTP/1.1 (`GET http://a.example/x`) or `:authority` in HTTP/2. It then wins
/// over any `Host` header (RFC 9112 3.2.2: a server must ignore `Host` and use the
/// target's authority; RFC 9113 8.3.1), and `Host` is replaced by it without any userinfo,
/// so the backend and `X-Forwarded-Host` see the same host the balancer routed on.
pub fn add_forwarded(headers: &mut HeaderMap, client: &ClientInfo, authority: Option<&str>) {
    // Append to an existing chain: "a, b" + client. A chain that is not valid text is
    // replaced rather than extended.
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            let client_ip = client.client_ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{prev}, {client_ip}"))
                .unwrap_or_else(|_| client.client_ip.clone())
        }
        _ => client.client_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_FORWARDED_PROTO.clone(), client.proto.clone());
    if let Some(auth) = authority
        .map(|a| a.rsplit_once('@').map_or(a, |(_, host)| host))
        .filter(|a| !a.is_empty())
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(HOST, auth);
    }
    if let Some(host) = headers.get(&HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// This balancer's hop in `Via` (RFC 9110 7.6.3): `1.1 <token>`, where `token` is the
/// balancer's random per-process pseudonym (`scaleout-<hex>`).
pub fn via_value(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("1.1 {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("1.1 scaleout"))
}

/// Appends this balancer's hop (`via`, from [`via_value`]) to the request's `Via`.
pub fn add_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(http::header::VIA, via.clone());
}

/// Refuses a request whose `Via` already names `token` as a received-by pseudonym: it
/// has been through this balancer before, so a backend is the balancer itself (or
/// forwards back to it) and forwarding again would loop until something runs out.
/// Pure; never panics.
pub fn check_loop(headers: &HeaderMap, token: &str) -> Result<(), RequestRule> {
    for v in headers.get_all(http::header::VIA) {
        let Ok(text) = v.to_str() else { continue };
        for hop in text.split(',') {
            if hop.split_whitespace().nth(1) == Some(token) {
                return Err(RequestRule::Loop);
            }
        }
    }
    Ok(())
}

/// Whether an incoming request id may be kept: non-empty, at most [`MAX_REQUEST_ID_LEN`]
/// bytes, visible ASCII only.
pub fn is_valid_request_id(value: &HeaderValue) -> bool {
    is_valid_request_id_bytes(value.as_bytes())
}

/// [`is_valid_request_id`] on raw bytes.
pub fn is_valid_request_id_bytes(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| (0x21..0x7f).contains(c))
}

/// Keeps a valid incoming `X-Request-Id`, else sets one built from `random` (a UUID v4
/// layout). Returns the id in effect.
pub fn ensure_request_id(headers: &mut HeaderMap, random: u128) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && is_valid_request_id(v)
    {
        return v.clone();
    }
    let id = request_id_from_random(random);
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// A UUID-v4-shaped request id from 128 random bits.
pub fn request_id_from_random(random: u128) -> HeaderValue {
    let mut buf = [0u8; REQUEST_ID_LEN];
    let text = write_request_id(random, &mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Length of a generated request id.
pub const REQUEST_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// Writes the UUID-v4-shaped request id of `random` into `buf` (no allocation).
pub fn write_request_id(random: u128, buf: &mut [u8; REQUEST_ID_LEN]) -> &str {
    let uuid = uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid();
    uuid.hyphenated().encode_lower(buf)
}

/// The value of parameter `name` in a query string (`a=1&b=2`), undecoded; a parameter
/// without `=` has the empty value.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Extracts the value of cookie `name` from the `Cookie` headers, if present.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let pair = pair.trim();
            if let Some((k, v)) = pair.split_once('=')
                && k.trim() == name
            {
                return Some(v.trim());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
