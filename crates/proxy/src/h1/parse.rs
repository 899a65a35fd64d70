//! The HTTP/1.1 codec of the fast path, as pure functions over byte slices: a strict
//! request-head parser, the request and response head rewriters, a response-head parser
//! and a streaming chunked-body decoder. `httparse` tokenises; this module adds what
//! RFC 9112 requires of a server that forwards, so that no request whose framing two
//! parsers could read differently ever reaches a backend:
//!
//! - lines end in CRLF: a bare LF or a bare CR anywhere in the head is refused;
//! - no obs-fold, no whitespace before a header's colon, one space between the parts of
//!   the request line, visible ASCII in the target (httparse's strict defaults, kept);
//! - `Content-Length` is one decimal number (several identical ones are accepted, several
//!   that are not byte-identical are refused); `Transfer-Encoding` is one `chunked` (anything else is
//!   501), never together with `Content-Length` and never on HTTP/1.0;
//! - exactly one valid, non-empty `Host` on HTTP/1.1; an absolute-form target names the
//!   authority and the `Host` forwarded is that authority (RFC 9112 3.2.2), so the
//!   backend and the balancer's routing always agree;
//! - bounded: the head at most `max_head_bytes`, at most `max_headers` fields
//!   ([`MAX_HEADERS`] storage), a method at most `max_method_bytes`.
//!
//! The rewriters emit a head with exactly one framing header of our own choosing, the
//! hop-by-hop headers (and those `Connection` names) removed, and `X-Forwarded-*` and
//! `X-Request-Id` set; re-parsing their output gives the same request (the fuzz target
//! checks this). Nothing here allocates except by appending to the caller's buffer,
//! reads the clock or panics on any input.

use std::mem::MaybeUninit;

use crate::headers::{REQUEST_ID_LEN, RequestRule, is_valid_request_id_bytes, write_request_id};

pub use httparse::Header;

/// Header storage of the fast path: a config with more `max_headers` than this is served
/// by the hyper path only.
pub const MAX_HEADERS: usize = 1024;

/// Largest response head accepted from a backend.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Bounds of a request head (from `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (request line + headers + the empty line), bytes.
    pub max_head_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest method, bytes.
    pub max_method_bytes: usize,
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    Empty,
    /// `Content-Length: n` (0 included: it is forwarded as sent).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a validated request head says, without borrowing the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// Bytes of the head, the final CRLF included (the body starts here).
    pub head_len: usize,
    /// An HTTP/1.0 request.
    pub http10: bool,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client keeps the connection open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// A WebSocket upgrade (`Connection: upgrade`, `Upgrade: websocket`) on HTTP/1.1.
    pub websocket: bool,
    /// A `HEAD` request (its response has no body whatever its headers say).
    pub head_method: bool,
}

/// A request head that passed every rule.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    /// The method, as sent.
    pub method: &'b str,
    /// The path and query to send (origin form; `*` for `OPTIONS *`), without the leading
    /// `/` when [`Request::slash`] says to add it.
    pub path: &'b str,
    /// Whether `/` must be written before `path` (an absolute-form target with an empty
    /// path or only a query).
    pub slash: bool,
    /// The authority of an absolute-form target (it replaces `Host`).
    pub authority: Option<&'b str>,
    /// The `Host` header's value, if any.
    pub host: Option<&'b [u8]>,
    /// Every header field, in order.
    pub headers: &'h [Header<'b>],
    /// The rest, validated.
    pub info: HeadInfo,
}

impl Request<'_, '_> {
    /// The authority the request is for: the absolute-form target's, else `Host`'s.
    pub fn effective_host(&self) -> Option<&[u8]> {
        self.authority.map(str::as_bytes).or(self.host)
    }

    /// The path without the query (for hashing on the path).
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// Fresh header storage for [`parse_request`] (uninitialised: no cost to make).
pub fn header_storage<'b>() -> [MaybeUninit<Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Whether `buf` starts like the HTTP/2 connection preface (`PRI * HTTP/2.0`): such a
/// connection is h2c with prior knowledge and goes to the hyper path whole.
pub fn is_h2_preface(buf: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let n = buf.len().min(PREFACE.len());
    n > 0 && buf[..n] == PREFACE[..n]
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether a CR not followed by LF is in `buf` (a CR at its very end may still be
/// followed by one: not counted).
fn has_bare_cr(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
}

/// Whether every LF of `head` is preceded by a CR.
fn lf_without_cr(head: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in head {
        if b == b'\n' && prev != b'\r' {
            return true;
        }
        prev = b;
    }
    false
}

/// A strict `Content-Length` value: 1 to 19 digits, nothing else.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether `v` is a valid authority (`host[:port]`, IP literal in brackets): the
/// characters of RFC 3986's reg-name, IP-literal and port, no userinfo, not empty.
pub fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                        | b'%'
                )
        })
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Splits a request target into (path, slash, authority), or refuses it.
fn split_target<'b>(
    method: &str,
    target: &'b str,
) -> Result<(&'b str, bool, Option<&'b str>), RequestRule> {
    if !target.bytes().all(|b| (0x21..0x7f).contains(&b)) || target.contains('#') {
        return Err(RequestRule::InvalidTarget);
    }
    if target.starts_with('/') {
        return Ok((target, false, None));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((target, false, None))
        } else {
            Err(RequestRule::InvalidTarget)
        };
    }
    let rest = match target.split_once("://") {
        Some((scheme, rest)) if eq(scheme, "http") || eq(scheme, "https") => rest,
        _ => return Err(RequestRule::InvalidTarget),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !valid_authority(authority.as_bytes()) {
        return Err(RequestRule::InvalidHost);
    }
    Ok((path, !path.starts_with('/'), Some(authority)))
}

/// Parses and validates a request head at the start of `buf`. `Ok(None)`: incomplete
/// (read more); `Err`: refuse with the rule's status and close the connection.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    limits: &Limits,
    storage: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<Request<'b, 'h>>, RequestRule> {
    let max_headers = limits.max_headers.min(storage.len());
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(buf, &mut storage[..max_headers]);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if has_bare_cr(buf) || lf_without_cr(buf) {
                return Err(RequestRule::BareLineEnding);
            }
            if buf.len() >= limits.max_head_bytes {
                return Err(RequestRule::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestRule::TooManyHeaders),
        Err(_) => {
            let seen = &buf[..buf.len().min(limits.max_head_bytes)];
            return Err(if has_bare_cr(seen) || lf_without_cr(seen) {
                RequestRule::BareLineEnding
            } else {
                RequestRule::Malformed
            });
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(RequestRule::HeadTooLarge);
    }
    if lf_without_cr(&buf[..head_len]) {
        return Err(RequestRule::BareLineEnding);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(RequestRule::Malformed);
    };
    if method.len() > limits.max_method_bytes {
        return Err(RequestRule::MethodTooLong);
    }
    if method == "CONNECT" {
        return Err(RequestRule::Connect);
    }
    let http10 = version == 0;
    let (path, slash, authority) = split_target(method, target)?;

    let mut host: Option<&[u8]> = None;
    let mut hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut cl_raw: Option<&[u8]> = None;
    let mut te_headers = 0usize;
    let mut te_chunked = false;
    let (mut close, mut keep_alive_token, mut conn_upgrade) = (false, false, false);
    let mut upgrade_websocket: Option<bool> = None;
    let mut expect_continue = false;
    let headers: &'h [Header<'b>] = req.headers;
    for h in headers {
        let name = h.name;
        let v = h.value;
        if eq(name, "host") {
            hosts += 1;
            host = Some(v);
        } else if eq(name, "content-length") {
            // Duplicates must be byte-identical ("5" and "05" are refused together).
            let raw = v.trim_ascii();
            let n = parse_content_length(raw).ok_or(RequestRule::InvalidContentLength)?;
            if cl_raw.is_some_and(|prev| prev != raw) {
                return Err(RequestRule::InvalidContentLength);
            }
            cl_raw = Some(raw);
            content_length = Some(n);
        } else if eq(name, "transfer-encoding") {
            te_headers += 1;
            te_chunked = v.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if eq(name, "connection") {
            for t in tokens(v) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                }
            }
        } else if eq(name, "upgrade") {
            let ws = tokens(v).all(|t| t.eq_ignore_ascii_case(b"websocket"));
            upgrade_websocket = Some(upgrade_websocket.unwrap_or(true) && ws);
        } else if eq(name, "expect") {
            if !v.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(RequestRule::UnsupportedExpectation);
            }
            expect_continue = true;
        }
    }
    if te_headers > 0 {
        if content_length.is_some() {
            return Err(RequestRule::ConflictingFraming);
        }
        if http10 {
            return Err(RequestRule::TransferEncodingOnHttp10);
        }
        if te_headers > 1 || !te_chunked {
            return Err(RequestRule::UnsupportedTransferEncoding);
        }
    }
    if hosts > 1 {
        return Err(RequestRule::DuplicateHost);
    }
    match host {
        None if !http10 => return Err(RequestRule::MissingHost),
        Some(h) if h.iter().all(u8::is_ascii_whitespace) => return Err(RequestRule::EmptyHost),
        Some(h) if !valid_authority(h) => return Err(RequestRule::InvalidHost),
        _ => {}
    }
    let framing = match (te_headers > 0, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Empty,
    };
    let keep_alive = if http10 {
        keep_alive_token && !close
    } else {
        !close
    };
    Ok(Some(Request {
        method,
        path,
        slash,
        authority,
        host,
        headers,
        info: HeadInfo {
            head_len,
            http10,
            framing,
            keep_alive,
            expect_continue,
            websocket: !http10 && conn_upgrade && upgrade_websocket == Some(true),
            head_method: method == "HEAD",
        },
    }))
}

/// Whether a header is hop-by-hop by name (RFC 9110 7.6.1) or is one the rewriters
/// always write themselves.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ]
    .iter()
    .any(|h| eq(name, h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// Whether `name` is listed in one of the `Connection` headers.
fn listed_in_connection(headers: &[Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| eq(h.name, "connection"))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// What the request rewriter adds about the client.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's address, as text.
    pub client_ip: &'a [u8],
    /// `X-Forwarded-Proto`.
    pub proto: &'a [u8],
    /// `Host` for an HTTP/1.0 request without one: the balancer's listener.
    pub listener: &'a [u8],
    /// Random bits for a generated request id.
    pub random: u128,
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether an `X-Forwarded-For` value can be extended (visible ASCII and spaces).
fn plain_text(v: &[u8]) -> bool {
    v.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// Appends the head to send upstream for `req` (HTTP/1.1, origin form): `Host` (the
/// absolute-form authority, the client's, or the listener's for HTTP/1.0), every
/// end-to-end header as sent, `X-Forwarded-For/Proto/Host`, `X-Request-Id` (kept when
/// valid, else generated) and one framing header. Returns nothing; never fails.
pub fn write_request_head(req: &Request<'_, '_>, fwd: &Forwarding<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    if req.slash {
        out.push(b'/');
    }
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = req.effective_host().unwrap_or(fwd.listener);
    put_header(out, b"host", host);
    let has_connection = req.headers.iter().any(|h| eq(h.name, "connection"));
    let mut request_id: Option<&[u8]> = None;
    let mut xff_plain = true;
    let mut xff_any = false;
    for h in req.headers {
        let name = h.name;
        if eq(name, "x-forwarded-for") {
            xff_plain &= plain_text(h.value);
            xff_any |= !h.value.trim_ascii().is_empty();
            continue;
        }
        if eq(name, "x-request-id") {
            if request_id.is_none() && is_valid_request_id_bytes(h.value) {
                request_id = Some(h.value);
            }
            continue;
        }
        if eq(name, "host")
            || hop_by_hop(name)
            || eq(name, "expect")
            || eq(name, "x-forwarded-proto")
            || eq(name, "x-forwarded-host")
            || (has_connection && listed_in_connection(req.headers, name))
        {
            continue;
        }
        put_header(out, name.as_bytes(), h.value);
    }
    // X-Forwarded-For: the chain so far (every such header, in order), then the client.
    out.extend_from_slice(b"x-forwarded-for: ");
    if xff_plain && xff_any {
        for h in req.headers.iter().filter(|h| eq(h.name, "x-forwarded-for")) {
            let v = h.value.trim_ascii();
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(fwd.client_ip);
    out.extend_from_slice(b"\r\n");
    put_header(out, b"x-forwarded-proto", fwd.proto);
    put_header(out, b"x-forwarded-host", host);
    match request_id {
        Some(id) => put_header(out, b"x-request-id", id),
        None => {
            let mut buf = [0u8; REQUEST_ID_LEN];
            let id = write_request_id(fwd.random, &mut buf);
            put_header(out, b"x-request-id", id.as_bytes());
        }
    }
    match req.info.framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// How a response body from a backend is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// None: a response to HEAD, 1xx, 204, 304.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// Why a backend's response head is refused (the attempt fails as a protocol error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadResponse {
    /// Not HTTP/1.x syntax, a bare LF, or a head over [`MAX_RESPONSE_HEAD`].
    Malformed,
    /// `Content-Length` invalid or conflicting, or both it and `Transfer-Encoding`.
    Framing,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnexpectedUpgrade,
}

/// A backend's response head.
#[derive(Debug)]
pub struct Response<'b, 'h> {
    /// Status code (100..=999).
    pub status: u16,
    /// Reason phrase, as sent.
    pub reason: &'b str,
    /// Every header field, in order.
    pub headers: &'h [Header<'b>],
    /// Bytes of the head.
    pub head_len: usize,
    /// How its body is delimited.
    pub body: BodyKind,
    /// `Content-Length` as sent (kept on bodiless responses such as HEAD's).
    pub content_length: Option<u64>,
    /// Whether the backend connection may carry another request after this response.
    pub reusable: bool,
}

/// Parses a response head from a backend at the start of `buf`. `Ok(None)`: incomplete.
/// Interim 1xx responses (other than 101) are returned like others; the caller skips
/// them.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    head_request: bool,
    storage: &'h mut [MaybeUninit<Header<'b>>],
) -> Result<Option<Response<'b, 'h>>, BadResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, storage)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err(BadResponse::Malformed),
    };
    if head_len > MAX_RESPONSE_HEAD || lf_without_cr(&buf[..head_len]) {
        return Err(BadResponse::Malformed);
    }
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse::Malformed);
    };
    if status == 101 {
        return Err(BadResponse::UnexpectedUpgrade);
    }
    let mut content_length = None;
    let mut te: Option<bool> = None;
    let (mut close, mut keep_alive) = (false, false);
    let headers: &'h [Header<'b>] = resp.headers;
    for h in headers {
        if eq(h.name, "content-length") {
            let n = parse_content_length(h.value.trim_ascii()).ok_or(BadResponse::Framing)?;
            if content_length.is_some_and(|p| p != n) {
                return Err(BadResponse::Framing);
            }
            content_length = Some(n);
        } else if eq(h.name, "transfer-encoding") {
            // Chunked only when it is the final coding of the last such header.
            let last_chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            te = Some(last_chunked);
        } else if eq(h.name, "connection") {
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    let body = if bodiless {
        BodyKind::Empty
    } else {
        match (te, content_length) {
            (Some(_), Some(_)) => return Err(BadResponse::Framing),
            (Some(_), None) if version == 0 => return Err(BadResponse::Framing),
            (Some(true), None) => BodyKind::Chunked,
            (Some(false), None) => BodyKind::UntilClose,
            (None, Some(n)) => BodyKind::Length(n),
            (None, None) => BodyKind::UntilClose,
        }
    };
    let persistent = if version == 0 {
        keep_alive && !close
    } else {
        !close
    };
    Ok(Some(Response {
        status,
        reason: resp.reason.unwrap_or(""),
        headers,
        head_len,
        body,
        content_length,
        reusable: persistent && body != BodyKind::UntilClose,
    }))
}

/// How the response is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBody {
    /// No body.
    Empty,
    /// `Content-Length: n`, copied through.
    Length(u64),
    /// Chunked, passed through as the backend framed it (validated by [`ChunkedDecoder`]).
    Chunked,
    /// The backend's body decoded (chunked to an HTTP/1.0 client) or until-close, sent
    /// until the connection closes.
    UntilClose { dechunk: bool },
}

/// Appends the client's response head for `resp` and says how to frame its body and
/// whether the client connection must close after it (`client_keep_alive` false, or a
/// body delimited by closing). `set_cookie` is added (sticky pinning).
pub fn write_response_head(
    resp: &Response<'_, '_>,
    client_http10: bool,
    client_keep_alive: bool,
    set_cookie: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> (ClientBody, bool) {
    let framing = match resp.body {
        BodyKind::Empty => ClientBody::Empty,
        BodyKind::Length(n) => ClientBody::Length(n),
        BodyKind::Chunked if client_http10 => ClientBody::UntilClose { dechunk: true },
        BodyKind::Chunked => ClientBody::Chunked,
        BodyKind::UntilClose => ClientBody::UntilClose { dechunk: false },
    };
    let keep = client_keep_alive && !matches!(framing, ClientBody::UntilClose { .. });
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let has_connection = resp.headers.iter().any(|h| eq(h.name, "connection"));
    for h in resp.headers {
        if hop_by_hop(h.name) || (has_connection && listed_in_connection(resp.headers, h.name)) {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    if let Some(c) = set_cookie {
        put_header(out, b"set-cookie", c);
    }
    match framing {
        ClientBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientBody::Empty => {
            if let Some(n) = resp.content_length {
                out.extend_from_slice(b"content-length: ");
                write_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
        }
        ClientBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ClientBody::UntilClose { .. } => {}
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client_http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, !keep)
}

/// A chunked body that is not valid (the connection carrying it is abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the chunk-size hex digits (`digits` so far).
    Size { digits: u8 },
    /// In a chunk extension, up to CR.
    Ext,
    /// After the size line's CR.
    SizeLf,
    /// In chunk data, `left` bytes to go.
    Data { left: u64 },
    /// After data: CR expected.
    DataCr,
    /// After data: LF expected.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    /// The body has ended.
    Done,
}

/// A streaming, strict decoder of a chunked body (RFC 9112 7.1): hex sizes of at most 15
/// digits, extensions skipped, CRLF everywhere, trailers at most 16 KiB. Feeds the data
/// bytes to a callback and says how much input it used; never allocates.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    meta_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0 },
            size: 0,
            meta_bytes: 0,
        }
    }
}

/// Longest chunk extension or trailer section accepted.
const MAX_CHUNK_META: usize = 16 * 1024;

impl ChunkedDecoder {
    /// Whether the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, calling `data` with each run of body bytes. Returns the bytes
    /// of `input` used: all of it, or fewer when the body ended inside it.
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data { left } => {
                    let n = (input.len() - i).min(left.min(usize::MAX as u64) as usize);
                    data(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { left }
                    };
                    continue;
                }
                ChunkState::Size { digits } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 15 {
                            return Err(BadChunk);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.state = ChunkState::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(BadChunk);
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.meta_bytes = 0;
                        self.state = ChunkState::Ext;
                    } else if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else {
                        return Err(BadChunk);
                    }
                }
                ChunkState::Ext => {
                    self.meta_bytes += 1;
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b == b'\n'
                        || (b < 0x20 && b != b'\t')
                        || b == 0x7f
                        || self.meta_bytes > MAX_CHUNK_META
                    {
                        return Err(BadChunk);
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    if self.size == 0 {
                        self.meta_bytes = 0;
                        self.state = ChunkState::TrailerStart;
                    } else {
                        self.state = ChunkState::Data { left: self.size };
                    }
                    self.size = 0;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::Size { digits: 0 };
                }
                ChunkState::TrailerStart => {
                    self.meta_bytes += 1;
                    if b == b'\r' {
                        self.state = ChunkState::EndLf;
                    } else if b == b'\n' || b == b' ' || b == b'\t' || b < 0x20 || b == 0x7f {
                        return Err(BadChunk);
                    } else {
                        self.state = ChunkState::Trailer;
                    }
                }
                ChunkState::Trailer => {
                    self.meta_bytes += 1;
                    if self.meta_bytes > MAX_CHUNK_META {
                        return Err(BadChunk);
                    }
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(BadChunk);
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests;
