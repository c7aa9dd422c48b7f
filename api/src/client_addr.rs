//! Where a request came from: the peer address, or, when the peer is a proxy
//! the config trusts (`trusted_proxies`), the address that proxy chain says
//! it forwarded for.
//!
//! `X-Forwarded-For` is a list each proxy appends its own peer to, so only
//! its right end is written by proxies we know; anything to the left of the
//! first untrusted hop was written by the client and may be made up. The
//! client is therefore the rightmost hop that is not a trusted proxy, found
//! by walking from the peer leftwards. `X-Forwarded-Proto` is believed only
//! from a trusted peer, for the same reason.

use crate::ApiState;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The proxy networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts no proxy: the client is always the peer.
    pub fn none() -> Self {
        TrustedProxies::default()
    }

    /// Trusts every address (what the deprecated `trust_forwarded_for`
    /// means): the client is the leftmost `X-Forwarded-For` hop.
    pub fn all() -> Self {
        TrustedProxies {
            nets: vec![
                "0.0.0.0/0".parse().expect("a valid network"),
                "::/0".parse().expect("a valid network"),
            ],
        }
    }

    /// Parses networks (`10.0.0.0/8`, `fd00::/8`) and single addresses
    /// (`127.0.0.1`, taken as `/32` or `/128`). The error names the entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let nets = stevedore_core::net::parse_networks("trusted_proxies", "10.0.0.0/8", entries)?;
        Ok(TrustedProxies { nets })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` with `headers`: the
    /// peer itself unless it is trusted; otherwise the rightmost
    /// `X-Forwarded-For` hop that is not trusted (the leftmost hop when all
    /// are). A hop that is not an address ends the walk at the last
    /// address known good.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(addr) = hop.parse::<IpAddr>() else {
                break;
            };
            client = addr.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }

    /// Whether the client reached the proxy over HTTPS: a trusted peer's
    /// `X-Forwarded-Proto: https` (its first value, the outermost proxy's).
    pub fn forwarded_https(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        peer.is_some_and(|p| self.trusts(p))
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }
}

/// Where a request came from, as an extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The TCP peer (`None` when the server did not record it, as in
    /// in-process tests).
    pub peer: Option<IpAddr>,
    /// The client: the peer, or behind trusted proxies whom they forwarded for.
    pub client: Option<IpAddr>,
    /// Whether a trusted proxy says the client used HTTPS.
    pub https: bool,
}

impl ClientAddr {
    /// The addresses of a request with `headers` and `extensions`.
    pub fn of(proxies: &TrustedProxies, headers: &HeaderMap, extensions: &Extensions) -> Self {
        let peer = peer_ip(extensions);
        ClientAddr {
            peer,
            client: peer.map(|p| proxies.client_ip(p, headers)),
            https: proxies.forwarded_https(peer, headers),
        }
    }
}

impl<S> FromRequestParts<S> for ClientAddr
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let api = ApiState::from_ref(state);
        Ok(ClientAddr::of(&api.proxies, &parts.headers, &parts.extensions))
    }
}

/// The TCP peer of a request, when the server recorded it (`serve` does).
pub fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let p = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1"]).unwrap();
        let peer = ip("127.0.0.1");
        // The client wrote 6.6.6.6 itself; 203.0.113.9 is who reached 10.1.1.1.
        let h = xff(&["6.6.6.6, 203.0.113.9, 10.1.1.1"]);
        assert_eq!(p.client_ip(peer, &h), ip("203.0.113.9"));
        // Several headers are one list, in order.
        let h = xff(&["6.6.6.6", "203.0.113.9, 10.1.1.1"]);
        assert_eq!(p.client_ip(peer, &h), ip("203.0.113.9"));
        // Every hop trusted: the leftmost is the client.
        assert_eq!(p.client_ip(peer, &xff(&["10.9.9.9, 10.1.1.1"])), ip("10.9.9.9"));
        // Garbage stops the walk at the last good address.
        assert_eq!(
            p.client_ip(peer, &xff(&["203.0.113.9, nonsense, 10.1.1.1"])),
            ip("10.1.1.1")
        );
        assert_eq!(p.client_ip(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let p = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let h = xff(&["203.0.113.9"]);
        assert_eq!(p.client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        assert_eq!(
            TrustedProxies::none().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
        let mut https = h.clone();
        https.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(!p.forwarded_https(Some(ip("192.0.2.1")), &https));
        assert!(p.forwarded_https(Some(ip("10.2.3.4")), &https));
        assert!(!p.forwarded_https(None, &https));
    }

    #[test]
    fn trusting_all_takes_the_leftmost_hop_as_the_old_flag_did() {
        let all = TrustedProxies::all();
        let h = xff(&["198.51.100.7, 10.1.1.1"]);
        assert_eq!(all.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn ipv4_mapped_peers_and_single_addresses_are_understood() {
        let p = TrustedProxies::parse(&["127.0.0.1", "fd00::/8"]).unwrap();
        assert!(p.trusts(ip("::ffff:127.0.0.1")));
        assert!(p.trusts(ip("fd12::1")));
        assert!(!p.trusts(ip("127.0.0.2")));
        let h = xff(&["2001:db8::1"]);
        assert_eq!(p.client_ip(ip("::ffff:127.0.0.1"), &h), ip("2001:db8::1"));
        let e = TrustedProxies::parse(&["10.0.0.0/33"]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(TrustedProxies::parse(&["example.com"]).is_err());
    }
}
