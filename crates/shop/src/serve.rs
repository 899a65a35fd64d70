//! The public listener's accept loop (in place of `axum::serve`): hyper's HTTP/1.1 and
//! HTTP/2 server per connection, the peer address in each request's extensions (for the
//! per-client password-hash shares, see `client_addr`), TCP_NODELAY, and graceful
//! shutdown.
//!
//! Why not `axum::serve`: hyper answers a request it cannot parse by itself, before any
//! handler or middleware runs (400 for a garbage request line or header, 414 for a URI
//! too long, 431 for a head larger than its buffer) and with an empty body; hyper offers
//! no hook for those answers. [`JsonErrorIo`] sits between hyper and the socket and
//! replaces exactly such an answer (a 400/414/431 head with `content-length: 0` and
//! nothing after it, which the router never produces since every error it answers has a
//! JSON body) with the same status and a JSON body, so every error status the shop sends
//! has one. What remains: if a client pipelines a valid request and a malformed one and
//! hyper writes both answers in one buffer, the second keeps hyper's empty body; HTTP/2
//! protocol errors are stream or connection resets, which have no body by design.
//!
//! Must never: hold anything across connections but the router and the shutdown state.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown`, then stops accepting and waits for
/// open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    instance_id: &str,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As axum::serve: the CONNECT protocol for HTTP/2 WebSockets.
    builder.http2().enable_connect_protocol();
    let builder = std::sync::Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let instance: std::sync::Arc<str> = instance_id.into();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let io = TokioIo::new(JsonErrorIo::new(stream, instance.clone()));
        let conn = builder
            .serve_connection_with_upgrades(io, TowerToHyperService::new(svc))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The JSON answer replacing hyper's empty automatic answer `head`, if `head` is one.
fn json_for_automatic_error(head: &[u8], instance: &str) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line.strip_prefix("HTTP/1.")?.get(2..5)?;
    let (code, reason) = match code {
        "400" => (400, "bad request"),
        "414" => (414, "uri too long"),
        "431" => (431, "request header fields too large"),
        _ => return None,
    };
    let empty = lines.any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let body = serde_json::json!({ "error": reason }).to_string();
    let reason_phrase = axum::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let instance = instance.replace(['\r', '\n'], "");
    Some(
        format!(
            "HTTP/1.1 {code} {reason_phrase}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\nx-instance-id: {instance}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// A client socket whose writes pass through unchanged, except that hyper's automatic
/// answer to an unparsable request (see the module docs) is replaced by a JSON one.
/// Reports writes as not vectored, so hyper hands over each response head whole.
pub struct JsonErrorIo {
    inner: TcpStream,
    instance: std::sync::Arc<str>,
    /// A replacement answer still being written, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
}

impl JsonErrorIo {
    /// Wraps `inner`; `instance` goes into the replacement answer's `x-instance-id`.
    pub fn new(inner: TcpStream, instance: std::sync::Arc<str>) -> Self {
        JsonErrorIo {
            inner,
            instance,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// Writes what is left of a replacement answer; ready once all of it is written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for JsonErrorIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrorIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(json) = json_for_automatic_error(buf, &self.instance) {
            self.pending = json;
            // The answer is ours to finish (flush and shutdown drive it); hyper's bytes
            // count as written.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_automatic_answers_are_replaced() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 10:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_for_automatic_error(head, "i-1").unwrap()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request header fields too large");
        assert!(out.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(out.contains("x-instance-id: i-1\r\n"));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(json_for_automatic_error(bad, "i").is_some());
        // The router's own answers have bodies, other statuses are left alone, and a
        // head followed by anything is not hyper's automatic answer.
        for keep in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
            b"garbage",
        ] {
            assert!(json_for_automatic_error(keep, "i").is_none(), "{keep:?}");
        }
    }
}
