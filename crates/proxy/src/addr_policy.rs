//! Which backend addresses the admin API may add: a pure check of `host:port` against the
//! configured address ranges (`admin.backend_ranges`, default loopback and private ranges).
//!
//! Why: whoever holds the admin token could otherwise point the balancer at the cloud
//! metadata service (169.254.169.254), at any host name, or smuggle credentials in a
//! `user:pw@host` authority, and have public traffic proxied there. So by default only IP
//! literals inside the ranges are accepted; link-local is outside them; the unspecified
//! address, multicast and broadcast are refused whatever the ranges say; host names only
//! when `admin.allow_hostnames` is set; userinfo never. Backends from the config file or
//! the in-process handle (the fleet) are the operator's own and are not checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use balance::cidr::Cidr;
use balance::cidr::canonical;

/// Addresses no backend may have: nothing listens there, or they reach many hosts.
fn never_allowed(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Some("the broadcast address"),
        IpAddr::V6(v6) if v6 == Ipv6Addr::UNSPECIFIED => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// Cloud metadata and instance-credential endpoints (AWS IMDS over IPv4 and IPv6, ECS and
/// EKS credential agents, Alibaba Cloud, Oracle Cloud's legacy address). Some sit inside
/// the default private ranges (`fd00:ec2::254` is in fc00::/7), so they are refused
/// unless `admin.backend_ranges` names the exact address (a /32 or /128 range).
pub const METADATA_ADDRS: [IpAddr; 7] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
];

/// Host names of metadata services, refused even when host names are allowed.
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata", "instance-data"];

/// Whether `ip` is an address of this machine (binding a UDP socket to it succeeds only
/// for local addresses; nothing is sent).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Whether a connection to `target` would reach a socket listening on `own`: the same
/// port and address, or `own` bound to the unspecified address (0.0.0.0 takes every
/// local IPv4 address; `::` every local address, IPv4 too on a dual-stack socket) and
/// `target` one of this machine's addresses.
pub fn reaches(own: SocketAddr, target: SocketAddr) -> bool {
    if own.port() != target.port() {
        return false;
    }
    let (own_ip, ip) = (canonical(own.ip()), canonical(target.ip()));
    if own_ip == ip {
        return true;
    }
    let family_ok = match own_ip {
        IpAddr::V4(v4) => v4.is_unspecified() && ip.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    };
    family_ok && (ip.is_unspecified() || ip.is_loopback() || is_local(ip))
}

/// The admin API's rule for backend addresses.
#[derive(Debug, Clone)]
pub struct BackendAddrPolicy {
    ranges: Vec<Cidr>,
    allow_hostnames: bool,
    /// This balancer's own listeners (public and admin): never a backend.
    own: Vec<SocketAddr>,
}

/// What [`BackendAddrPolicy::check`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// An IP literal, fully checked.
    Ip(SocketAddr),
    /// A host name (allowed by config): the caller resolves it and checks each address
    /// with [`BackendAddrPolicy::check_resolved`].
    HostName,
}

impl BackendAddrPolicy {
    /// From `admin.backend_ranges` (validated at start) and `admin.allow_hostnames`.
    pub fn new(ranges: &[String], allow_hostnames: bool) -> BackendAddrPolicy {
        BackendAddrPolicy {
            ranges: ranges.iter().filter_map(|r| Cidr::parse(r).ok()).collect(),
            allow_hostnames,
            own: Vec::new(),
        }
    }

    /// Also refuses every address that reaches one of `own` (the balancer's listeners).
    pub fn with_own_listeners(mut self, own: &[SocketAddr]) -> BackendAddrPolicy {
        self.own = own.to_vec();
        self
    }

    /// Why a resolved backend address is refused whatever the ranges say: the
    /// balancer's own listener, or a metadata endpoint not named exactly in the ranges.
    pub fn check_resolved(&self, sa: SocketAddr) -> Result<(), String> {
        if let Some(own) = self.own.iter().find(|&&own| reaches(own, sa)) {
            return Err(format!(
                "{sa} is this balancer's own listener ({own}): requests would loop back to it"
            ));
        }
        let ip = canonical(sa.ip());
        if METADATA_ADDRS.contains(&ip) {
            let exact = |r: &Cidr| r.is_exactly(ip);
            if !self.ranges.iter().any(exact) {
                return Err(format!(
                    "{ip} is a cloud metadata endpoint (refused unless admin.backend_ranges \
                     names it exactly)"
                ));
            }
        }
        Ok(())
    }

    /// Checks `addr` (`ip:port`, `[v6]:port`, or `host:port` when host names are allowed);
    /// the error is the reason, for the client. A host name still has to be resolved and
    /// each of its addresses passed to [`Self::check_resolved`].
    pub fn check(&self, addr: &str) -> Result<Accepted, String> {
        if addr.contains('@') {
            return Err("userinfo (user:password@) is not allowed in a backend address".into());
        }
        if addr.contains(['/', '?', '#']) || addr.chars().any(|c| c.is_whitespace()) {
            return Err(format!("{addr:?} is not host:port"));
        }
        let sa = match addr.parse::<SocketAddr>() {
            Ok(sa) if sa.port() == 0 => return Err(format!("{addr:?} has port 0")),
            Ok(sa) => sa,
            Err(_) => {
                crate::config::check_backend_addr(addr)?;
                if addr.starts_with('[') || addr.matches(':').count() > 1 {
                    return Err(format!("{addr:?} is not a valid address"));
                }
                if !self.allow_hostnames {
                    return Err(format!(
                        "{addr:?} is a host name; only IP addresses are allowed \
                         (set admin.allow_hostnames to allow names)"
                    ));
                }
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_NAMES.contains(&host.as_str()) {
                    return Err(format!("{addr:?} names a cloud metadata service"));
                }
                return Ok(Accepted::HostName);
            }
        };
        let ip = sa.ip();
        if let Some(what) = never_allowed(ip) {
            return Err(format!("{ip} is {what}"));
        }
        if !self.ranges.iter().any(|r| r.contains(ip)) {
            return Err(format!(
                "{ip} is outside admin.backend_ranges (loopback and private ranges by default; \
                 link-local and metadata addresses are refused)"
            ));
        }
        self.check_resolved(sa)?;
        Ok(Accepted::Ip(sa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> BackendAddrPolicy {
        BackendAddrPolicy::new(&crate::config::AdminConfig::default().backend_ranges, false)
    }

    #[test]
    fn default_ranges_allow_loopback_and_private_only() {
        let p = default_policy();
        for ok in [
            "127.0.0.1:80",
            "10.1.2.3:8080",
            "172.31.255.255:1",
            "192.168.0.10:443",
            "[::1]:8080",
            "[fd00::5]:80",
        ] {
            assert!(p.check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "169.254.169.254:80",
            "169.254.1.1:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "[ff02::1]:80",
            "255.255.255.255:80",
            "8.8.8.8:53",
            "172.32.0.1:80",
            "[::ffff:169.254.169.254]:80",
            "[2001:db8::1]:80",
            "[fd00:ec2::254]:80",
            "[fd00:ec2::23]:80",
            "metadata.google.internal:80",
            "localhost:80",
            "user:pw@127.0.0.1:80",
            "127.0.0.1:0",
            "127.0.0.1",
        ] {
            assert!(p.check(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn wide_ranges_still_refuse_unspecified_and_multicast() {
        let p = BackendAddrPolicy::new(&["0.0.0.0/0".into(), "::/0".into()], true);
        assert!(p.check("169.254.1.1:80").is_ok());
        assert_eq!(p.check("backend.internal:80"), Ok(Accepted::HostName));
        assert!(p.check("0.0.0.0:80").is_err());
        assert!(p.check("239.1.1.1:80").is_err());
        assert!(p.check("u@backend.internal:80").is_err());
    }

    #[test]
    fn metadata_endpoints_are_refused_unless_named_exactly() {
        let wide = BackendAddrPolicy::new(&["0.0.0.0/0".into(), "::/0".into()], true);
        for ip in METADATA_ADDRS {
            let addr = SocketAddr::new(ip, 80).to_string();
            let e = wide.check(&addr).unwrap_err();
            assert!(e.contains("metadata"), "{addr}: {e}");
        }
        assert!(wide.check("metadata.google.internal:80").is_err());
        assert!(wide.check("Metadata.Google.Internal.:80").is_err());
        let exact = BackendAddrPolicy::new(&["fd00:ec2::254/128".into()], false);
        assert!(exact.check("[fd00:ec2::254]:80").is_ok());
        assert!(exact.check("169.254.169.254:80").is_err());
    }

    #[test]
    fn the_balancers_own_listeners_are_refused() {
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "0.0.0.0:9090".parse().unwrap(),
        ];
        let p = default_policy().with_own_listeners(&own);
        let e = p.check("127.0.0.1:8080").unwrap_err();
        assert!(e.contains("own listener"), "{e}");
        // Another loopback address does not reach a socket bound to 127.0.0.1.
        assert!(p.check("127.0.0.2:8080").is_ok());
        assert!(p.check("127.0.0.1:8081").is_ok());
        // A wildcard listener is reached through every local address, mapped or not.
        for bad in [
            "127.0.0.1:9090",
            "127.0.0.53:9090",
            "[::ffff:127.0.0.1]:9090",
        ] {
            assert!(p.check(bad).is_err(), "{bad}");
        }
        // ... but not through IPv6 (0.0.0.0 is IPv4 only) nor through a remote address.
        assert!(p.check("[::1]:9090").is_ok());
        assert!(p.check("10.255.255.1:9090").is_ok() || is_local("10.255.255.1".parse().unwrap()));
        let v6 = default_policy().with_own_listeners(&["[::]:7000".parse().unwrap()]);
        assert!(v6.check("[::1]:7000").is_err());
        assert!(v6.check("127.0.0.1:7000").is_err());
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
        assert_eq!(Cidr::parse("::1").unwrap().prefix(), 128);
    }
}
