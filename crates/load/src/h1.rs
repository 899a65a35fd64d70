//! A minimal HTTP/1.1 client connection for the generator's hot path: requests are
//! encoded once into bytes (or into a reused buffer when templated), responses are
//! parsed with `httparse` straight out of one per-connection read buffer, and the body is
//! skipped (or kept, up to a cap, when the caller asks for it) by its framing.
//!
//! Why not hyper's `client::conn::http1` (the first design): per request it costs a
//! dispatch channel, a oneshot, a request and a response `HeaderMap` and a task wake
//! between the connection future and the sender, which together made the generator use
//! more CPU per request than wrk (issue 10); and its `SendRequest::ready` never resolved
//! after a server closed a keep-alive connection while the connection future was still
//! held, so a closed loop stopped for good when nginx closed after 1,000 requests.
//! Here the connection's life is explicit: every [`Exchange`] says whether the
//! connection may be reused (`Connection: close`, HTTP/1.0 without keep-alive, a
//! close-delimited body), and the caller reconnects.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked`; else `Content-Length`; else until close.
//! Interim 1xx responses are skipped. Bounded: the head may be at most
//! [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields; a kept body at most `keep_body` bytes
//! (the rest is read and dropped). This module never retries and never reads the clock.

use http::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted.
pub(crate) const MAX_HEADERS: usize = 100;
const READ_BUF: usize = 16 * 1024;

/// Why an exchange failed; the connection is unusable after any of these.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// The server closed the connection before a complete response.
    #[error("connection closed {0} bytes into the response")]
    Closed(usize),
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The response is not valid HTTP/1.x or exceeds a bound.
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    /// Final status code.
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// The body, when asked for (truncated at the cap).
    pub body: Option<Vec<u8>>,
}

/// Appends one encoded request to `out`. Header names and values were validated when
/// they became `HeaderName`/`HeaderValue`, so nothing here can inject a line; `host` is
/// skipped when `headers` has its own Host, and `Content-Length` is always ours.
pub(crate) fn encode_request(
    out: &mut Vec<u8>,
    method: &http::Method,
    target: &str,
    host: &HeaderValue,
    headers: &[(HeaderName, HeaderValue)],
    authorization: Option<&HeaderValue>,
    body: &[u8],
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n == http::header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (n, v) in headers {
        if n == http::header::CONTENT_LENGTH || n == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(a) = authorization {
        out.extend_from_slice(b"authorization: ");
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let wants_length = matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    );
    if !body.is_empty() || wants_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the head of a response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// Bytes of the head.
    len: usize,
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a response head. `Ok(None)`: incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(H1Error::Protocol("response head too large"))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Protocol("too many response header fields"));
        }
        Err(_) => return Err(H1Error::Protocol("malformed response head")),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let (mut close, mut keep, mut chunked, mut te, mut length) =
        (false, false, false, false, None::<u64>);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep |= has_token(h.value, "keep-alive");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(H1Error::Protocol("invalid Content-Length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(H1Error::Protocol("conflicting Content-Length"));
            }
            length = Some(v);
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if te {
        Framing::UntilClose
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    let keep_alive = framing != Framing::UntilClose && !close && (!http10 || keep);
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        len,
    }))
}

/// One client connection with its read buffer.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes; `Ok(false)` on end of stream. Makes room by moving unconsumed
    /// bytes to the front; the caller bounds how much it lets accumulate.
    async fn fill(&mut self) -> Result<bool, H1Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only a head can fill the buffer unconsumed: grow it, up to MAX_HEAD.
            let mut bigger = vec![0; (self.buf.len() * 2).min(MAX_HEAD + READ_BUF)];
            bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.buf = bigger.into_boxed_slice();
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Sends `request` and reads its response. `keep_body`: keep up to this many body
    /// bytes (`None`: discard). The connection must not be reused after an error or an
    /// exchange with `keep_alive == false`.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        keep_body: Option<usize>,
    ) -> Result<Exchange, H1Error> {
        let gone = |e: std::io::Error| match e.kind() {
            // The peer closed or reset before taking the request: same as a close with
            // no response byte (the caller may resend an idempotent request).
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                H1Error::Closed(0)
            }
            _ => H1Error::Io(e),
        };
        self.stream.write_all(request).await.map_err(gone)?;
        let mut seen = 0usize;
        let head = loop {
            // Nothing buffered (the usual case right after sending): read first.
            if self.start != self.end
                && let Some(h) = parse_head(self.pending(), head_request)?
            {
                self.start += h.len;
                seen += h.len;
                if (100..200).contains(&h.status) {
                    if h.status == 101 {
                        return Err(H1Error::Protocol("unexpected 101 Switching Protocols"));
                    }
                    continue;
                }
                break h;
            }
            let before = self.end - self.start;
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return Err(H1Error::Closed(seen + before)),
                Err(H1Error::Io(e)) if seen + before == 0 => return Err(gone(e)),
                Err(e) => return Err(e),
            }
        };
        let mut body = keep_body.map(|_| Vec::new());
        let cap = keep_body.unwrap_or(0);
        let keep = |data: &[u8], body: &mut Option<Vec<u8>>| {
            if let Some(b) = body.as_mut() {
                let room = cap.saturating_sub(b.len());
                b.extend_from_slice(&data[..data.len().min(room)]);
            }
        };
        match head.framing {
            Framing::None => {}
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.start == self.end && !self.fill().await? {
                        return Err(H1Error::Closed(seen));
                    }
                    let n = (self.end - self.start).min(left.min(usize::MAX as u64) as usize);
                    keep(&self.buf[self.start..self.start + n], &mut body);
                    self.start += n;
                    seen += n;
                    left -= n as u64;
                }
            }
            Framing::Chunked => loop {
                let size = loop {
                    match httparse::parse_chunk_size(self.pending()) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            self.start += n;
                            seen += n;
                            break size;
                        }
                        Ok(httparse::Status::Partial) => {
                            if self.end - self.start > 1024 {
                                return Err(H1Error::Protocol("chunk size line too long"));
                            }
                            if !self.fill().await? {
                                return Err(H1Error::Closed(seen));
                            }
                        }
                        Err(_) => return Err(H1Error::Protocol("invalid chunk size")),
                    }
                };
                if size == 0 {
                    self.skip_trailers(&mut seen).await?;
                    break;
                }
                let mut left = size;
                while left > 0 {
                    if self.start == self.end && !self.fill().await? {
                        return Err(H1Error::Closed(seen));
                    }
                    let n = (self.end - self.start).min(left.min(usize::MAX as u64) as usize);
                    keep(&self.buf[self.start..self.start + n], &mut body);
                    self.start += n;
                    seen += n;
                    left -= n as u64;
                }
                // The CRLF after the chunk data.
                while self.end - self.start < 2 {
                    if !self.fill().await? {
                        return Err(H1Error::Closed(seen));
                    }
                }
                if self.pending()[..2] != *b"\r\n" {
                    return Err(H1Error::Protocol("chunk data not followed by CRLF"));
                }
                self.start += 2;
                seen += 2;
            },
            Framing::UntilClose => loop {
                keep(&self.buf[self.start..self.end], &mut body);
                self.start = self.end;
                if !self.fill().await? {
                    break;
                }
            },
        }
        Ok(Exchange {
            status: head.status,
            keep_alive: head.keep_alive,
            body,
        })
    }

    /// Consumes the trailer section after the last chunk (up to the empty line).
    async fn skip_trailers(&mut self, seen: &mut usize) -> Result<(), H1Error> {
        loop {
            let p = self.pending();
            if p.len() >= 2 && p[..2] == *b"\r\n" {
                self.start += 2;
                *seen += 2;
                return Ok(());
            }
            if let Some(i) = p.windows(4).position(|w| w == b"\r\n\r\n") {
                self.start += i + 4;
                *seen += i + 4;
                return Ok(());
            }
            if p.len() >= MAX_HEAD {
                return Err(H1Error::Protocol("trailers too large"));
            }
            if !self.fill().await? {
                return Err(H1Error::Closed(*seen));
            }
        }
    }
}

#[cfg(test)]
mod tests;
