//! Who the client is, for per-client limits (the password-hash shares in `hashing`): the
//! TCP peer's address, or, when the peer is a trusted proxy (the balancer in front), the
//! right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
//!
//! Why only trusted peers: `X-Forwarded-For` is written by whoever sends the request, so a
//! client talking to the shop directly could name a fresh address on every request and
//! never use up its share. A proxy appends the address it saw, so the right-most entries
//! are the ones trusted proxies wrote. With no `trusted_proxies` (the default) the header
//! is ignored. Pure functions; nothing here reads the network.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

pub use balance::cidr::Cidr;
use balance::cidr::canonical;

/// The proxies whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// From `trusted_proxies` (validated at start; unparsable entries are skipped).
    pub fn new(ranges: &[String]) -> TrustedProxies {
        TrustedProxies(ranges.iter().filter_map(|r| Cidr::parse(r).ok()).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Right to left over every X-Forwarded-For line: skip trusted hops, stop at the
        // first entry that is not one; an unparsable entry ends the walk (keep the last
        // trusted hop's address rather than believe what came before it).
        let mut client = peer;
        let lines: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The client's address (see the module docs); `None` without a socket (in-process
/// `oneshot` tests), and then per-address shares do not apply.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<std::sync::Arc<crate::AppState>> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &std::sync::Arc<crate::AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(
            peer.map(|p| st.trusted_proxies.client_ip(p, &parts.headers)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let spoof = headers(&["1.2.3.4"]);
        assert_eq!(none.client_ip(peer, &spoof), peer);
        let lb = TrustedProxies::new(&["127.0.0.1/32".into(), "10.0.0.0/8".into()]);
        assert_eq!(
            lb.client_ip(peer, &spoof),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // A client-written prefix is ignored: the right-most untrusted entry counts.
        let chain = headers(&["6.6.6.6, 5.5.5.5", "10.1.1.1"]);
        assert_eq!(
            lb.client_ip(peer, &chain),
            "5.5.5.5".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last trusted hop.
        let junk = headers(&["6.6.6.6, nonsense, 10.1.1.1"]);
        assert_eq!(
            lb.client_ip(peer, &junk),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(lb.client_ip(peer, &HeaderMap::new()), peer);
        // An untrusted peer's header is never read.
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(lb.client_ip(other, &spoof), other);
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("x").is_err());
    }
}
