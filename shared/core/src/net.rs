//! IP network lists in the configuration (`[http] trusted_proxies`,
//! `[webhooks] allowed_networks`).

use ipnet::IpNet;
use std::net::IpAddr;

/// Parses networks (`10.0.0.0/8`, `fd00::/8`) and single addresses
/// (`127.0.0.1`, taken as `/32` or `/128`), host bits cleared. The error
/// names the setting, the bad entry and an `example` of a network.
pub fn parse_networks<S: AsRef<str>>(
    setting: &str,
    example: &str,
    entries: &[S],
) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|e| {
            let e = e.as_ref().trim();
            e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{setting}: {e:?} is not an IP network like {example} or an address"))
        })
        .collect()
}
