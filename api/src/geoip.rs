//! Optional client location from a MaxMind GeoIP2 / GeoLite2 City or Country
//! database (`geoip_database` in the config). Without one, `location` is "".

use std::net::IpAddr;
use std::path::Path;

/// An opened GeoIP database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").finish_non_exhaustive()
    }
}

impl GeoIp {
    /// Opens the database file (read into memory once).
    pub fn open(path: &Path) -> Result<Self, String> {
        maxminddb::Reader::open_readfile(path)
            .map(|reader| GeoIp { reader })
            .map_err(|e| format!("cannot open GeoIP database {}: {e}", path.display()))
    }

    /// "City, Country", or "Country", or "" when the address is unknown
    /// (private ranges, loopback, or not in the database).
    pub fn locate(&self, ip: IpAddr) -> String {
        let Ok(result) = self.reader.lookup(ip) else {
            return String::new();
        };
        let Ok(Some(city)) = result.decode::<maxminddb::geoip2::City>() else {
            return String::new();
        };
        let place = city.city.names.english;
        let country = city.country.names.english;
        [place, country]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> GeoIp {
        GeoIp::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip-test.mmdb")).unwrap()
    }

    #[test]
    fn addresses_resolve_to_city_and_country() {
        let g = fixture();
        assert_eq!(g.locate("56.78.90.12".parse().unwrap()), "New York, USA");
        assert_eq!(g.locate("81.2.69.160".parse().unwrap()), "United Kingdom");
        assert_eq!(g.locate("127.0.0.1".parse().unwrap()), "");
        assert_eq!(g.locate("::1".parse().unwrap()), "");
    }

    #[test]
    fn a_missing_database_is_a_clear_error() {
        let err = GeoIp::open(Path::new("/nonexistent.mmdb")).unwrap_err();
        assert!(err.contains("/nonexistent.mmdb"), "{err}");
    }
}
