//! Where a webhook delivery may connect: the guard against server-side
//! request forgery. A webhook's URL is chosen by a tenant, so without it a
//! tenant could make the worker call the loopback interface, the private
//! network it runs in, or a cloud metadata service.
//!
//! The rule is applied to every address a connection is about to use, after
//! name resolution (the worker's resolver and its check of literal
//! addresses), so a name that resolves to a public address when the webhook
//! is saved and to a private one later (DNS rebinding) is still refused.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The networks deliveries may not reach unless allowed: loopback, private
/// (RFC 1918), shared address space (CGNAT), link-local (cloud metadata),
/// unique-local, site-local and link-local IPv6, multicast, unspecified,
/// broadcast, the documentation and benchmarking ranges, and the IPv6
/// forms that may carry an IPv4 address to a private one through a
/// translator or tunnel (IPv4-translated, NAT64 well-known and local, 6to4,
/// Teredo).
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Which addresses deliveries may connect to (`[webhooks]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    allow_private: bool,
    allowed: Vec<IpNet>,
    blocked: Vec<IpNet>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            allow_private: false,
            allowed: vec![],
            blocked: BLOCKED
                .iter()
                .map(|n| n.parse().expect("a valid network"))
                .collect(),
        }
    }
}

impl NetworkPolicy {
    /// The policy of `allow_private_networks` and `allowed_networks`
    /// (CIDRs or single addresses; the error names the bad entry).
    pub fn new<S: AsRef<str>>(allow_private: bool, allowed: &[S]) -> Result<Self, String> {
        let allowed = crate::net::parse_networks("[webhooks] allowed_networks", "10.1.0.0/16", allowed)?;
        Ok(NetworkPolicy {
            allow_private,
            allowed,
            ..NetworkPolicy::default()
        })
    }

    /// `Ok` when a delivery may connect to `ip`; otherwise why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        // An IPv4-mapped (::ffff:a.b.c.d) or -compatible address is the IPv4 one.
        let ip = canonical(ip);
        if self.allow_private || self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match self.blocked.iter().find(|n| n.contains(&ip)) {
            Some(net) => {
                // The address goes to the worker's log only: the error is
                // shown to the webhook's owner in its delivery log, and a
                // host name's addresses would map the workers' network.
                tracing::warn!(%ip, %net, "webhook delivery refused: private or reserved address");
                Err(
                    "refused to connect: the address is in a private or reserved network; \
                     an operator allows it with [webhooks] allow_private_networks or allowed_networks"
                        .into(),
                )
            }
            None => Ok(()),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => compatible_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        },
        v4 => v4,
    }
}

/// The deprecated IPv4-compatible form `::a.b.c.d` (not `::` or `::1`).
fn compatible_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1)).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_refused_by_default() {
        let p = NetworkPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::a00:1",
            "fec0::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(p.check(ip).is_err(), "{bad} must be refused");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.check(good.parse().unwrap()).is_ok(), "{good} must be allowed");
        }
        let msg = p.check("127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(msg.contains("allow_private_networks"), "{msg}");
    }

    #[test]
    fn allowances_open_what_they_name() {
        let all = NetworkPolicy::new(true, &[] as &[&str]).unwrap();
        assert!(all.check("127.0.0.1".parse().unwrap()).is_ok());
        let some = NetworkPolicy::new(false, &["10.1.0.0/16", "127.0.0.1"]).unwrap();
        assert!(some.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(some.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(some.check("10.2.0.1".parse().unwrap()).is_err());
        assert!(some.check("127.0.0.2".parse().unwrap()).is_err());
        assert!(NetworkPolicy::new(false, &["nope"]).unwrap_err().contains("nope"));
    }
}
