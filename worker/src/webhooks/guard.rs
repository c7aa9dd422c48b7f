//! The webhook HTTP client, which connects only where the network policy
//! allows: a host name's addresses are checked by the client's own resolver
//! at connect time (so DNS rebinding cannot slip a private address past a
//! check made earlier), and a literal address in the URL before the request.
//! It follows no redirect and uses no proxy from the environment, either of
//! which would connect somewhere the check did not see.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use stevedore_core::webhook::network::NetworkPolicy;

/// Resolves names, keeping only the addresses the policy allows.
struct GuardedResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(format!("{host}: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client deliveries are sent with.
#[derive(Clone)]
pub struct GuardedClient {
    http: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

impl GuardedClient {
    /// A client with `timeout` per request (connection included).
    pub fn new(policy: NetworkPolicy, timeout: Duration) -> reqwest::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("Stevedore-Webhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(GuardedClient { http, policy })
    }

    /// The underlying client, once `url` passed [`GuardedClient::check_literal`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Refuses a URL whose host is a literal address the policy forbids
    /// (the resolver never sees those).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), String> {
        let ip: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        match ip {
            Some(ip) => self.policy.check(ip),
            None => Ok(()),
        }
    }
}
