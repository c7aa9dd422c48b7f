//! API keys and credentials.
//!
//! **Invariant:** API keys are never stored, only their SHA-256 digests, and
//! digests are compared in constant time. A key is 32 random bytes (256 bits),
//! so a fast hash is enough: there is nothing to brute-force, which is why no
//! password-hashing function (argon2, bcrypt) is used.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new random API key (64 lowercase hex characters).
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The digest stored for a key.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A digest no key hashes to in practice: what a key presented for an
/// unknown user (or a user without keys) is compared with.
const NO_KEY_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many hex characters of a key's digest name it in listings and logs
/// (32 bits: enough to tell a user's keys apart, nothing to guess a key with).
pub const FINGERPRINT_LEN: usize = 8;

/// The short, non-secret name of a stored key: the first
/// [`FINGERPRINT_LEN`] hex characters of its digest.
pub fn key_fingerprint(digest: &str) -> String {
    digest.chars().take(FINGERPRINT_LEN).collect()
}

/// What checking a presented key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCheck {
    /// Whether the key matched one of the user's digests.
    pub matched: bool,
    /// Which digest it matched (its position in the list), when it did.
    pub position: Option<usize>,
    /// How many digests the key's hash was compared with.
    pub compared: usize,
}

/// Checks `key` against a user's stored digests (`None`: no such user).
/// The key is hashed and compared in constant time with every digest, and
/// with one digest no key has when there are none, so an unknown user, a
/// user without keys and a user with one key cost the same work; which
/// digest matched is picked without a branch on the comparisons.
pub fn check_api_key<D: AsRef<str>>(key: &str, digests: Option<&[D]>) -> KeyCheck {
    use subtle::ConditionallySelectable;
    let candidate = hash_api_key(key);
    let mut ok = subtle::Choice::from(0);
    let mut position = 0u64;
    let compared = match digests {
        Some(d) if !d.is_empty() => {
            for (i, digest) in d.iter().enumerate() {
                let same = candidate.as_bytes().ct_eq(digest.as_ref().as_bytes());
                position.conditional_assign(&(i as u64), same);
                ok |= same;
            }
            d.len()
        }
        _ => {
            // The same comparison, whose answer is never a match.
            std::hint::black_box(candidate.as_bytes().ct_eq(NO_KEY_DIGEST.as_bytes()));
            1
        }
    };
    let matched = bool::from(ok);
    KeyCheck {
        matched,
        position: matched.then_some(position as usize),
        compared,
    }
}

/// Whether `key` matches one of the stored digests ([`check_api_key`]).
pub fn verify_api_key<D: AsRef<str>>(key: &str, digests: &[D]) -> bool {
    check_api_key(key, Some(digests)).matched
}

/// A SHA-256 digest of a user name and a key together: what an in-process
/// cache of verified credentials may keep (never the key itself).
pub fn credentials_digest(creds: &Credentials) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(creds.user.as_bytes());
    h.update([0u8]);
    h.update(creds.key.as_bytes());
    h.finalize().into()
}

/// Whether two digests are equal, compared in constant time.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Credentials as a client presented them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The API key (secret: never logged; `Debug` hides it).
    pub key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Not `Basic …` or `ApiKey …`.
    #[error("unsupported Authorization scheme: use 'Basic base64(user:apikey)' or 'ApiKey user:apikey'")]
    Scheme,
    /// The value is not `user:key`.
    #[error("malformed credentials: expected user:apikey")]
    Malformed,
}

/// The `Authorization` value the original clients send for `user:key`:
/// `Basic base64(user:key)` (what [`parse_authorization`] reads back).
pub fn basic_authorization(user: &str, key: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    format!("Basic {b}")
}

/// Parses `Authorization: Basic base64(user:key)` or `Authorization: ApiKey user:key`.
pub fn parse_authorization(value: &str) -> Result<Credentials, CredentialsError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(CredentialsError::Scheme)?;
    let pair = if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| CredentialsError::Malformed)?;
        String::from_utf8(raw).map_err(|_| CredentialsError::Malformed)?
    } else if scheme.eq_ignore_ascii_case("apikey") {
        rest.trim().to_string()
    } else {
        return Err(CredentialsError::Scheme);
    };
    let (user, key) = pair.split_once(':').ok_or(CredentialsError::Malformed)?;
    if user.is_empty() || key.is_empty() {
        return Err(CredentialsError::Malformed);
    }
    Ok(Credentials {
        user: user.to_string(),
        key: key.to_string(),
    })
}

/// Whether a user or namespace name is acceptable: 1–64 characters of
/// `[A-Za-z0-9_.-]`, starting with a letter or digit. Names appear in URLs and
/// routing keys, so nothing else is allowed.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_against_their_digest_only() {
        let k = generate_api_key();
        assert_eq!(k.len(), 64);
        let d = vec![hash_api_key("other"), hash_api_key(&k)];
        assert!(verify_api_key(&k, &d));
        assert!(!verify_api_key("nope", &d));
        assert!(!verify_api_key::<String>(&k, &[]));
    }

    #[test]
    fn unknown_users_and_wrong_keys_take_the_same_comparison_path() {
        let k = generate_api_key();
        let one = vec![hash_api_key(&k)];
        let unknown = check_api_key::<String>(&k, None);
        let no_keys = check_api_key::<String>(&k, Some(&[]));
        let wrong = check_api_key("wrong", Some(&one));
        assert_eq!(
            unknown,
            KeyCheck {
                matched: false,
                position: None,
                compared: 1
            }
        );
        assert_eq!(no_keys, unknown);
        assert_eq!(wrong, unknown);
        assert_eq!(
            check_api_key(&k, Some(&one)),
            KeyCheck {
                matched: true,
                position: Some(0),
                compared: 1
            }
        );
        // The placeholder digest is never a match, whatever is presented.
        assert!(!check_api_key::<String>(NO_KEY_DIGEST, None).matched);
        // The position names the digest that matched.
        let two = vec![hash_api_key("other"), hash_api_key(&k)];
        assert_eq!(check_api_key(&k, Some(&two)).position, Some(1));
        assert_eq!(key_fingerprint(&two[1]), two[1][..8]);
    }

    #[test]
    fn basic_authorization_is_what_the_original_clients_send() {
        assert_eq!(basic_authorization("admin", "s3cret"), "Basic YWRtaW46czNjcmV0");
        let c = parse_authorization(&basic_authorization("alice", "s3cret")).unwrap();
        assert_eq!((c.user.as_str(), c.key.as_str()), ("alice", "s3cret"));
    }

    #[test]
    fn both_header_schemes_parse() {
        let b = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let c = parse_authorization(&format!("Basic {b}")).unwrap();
        assert_eq!((c.user.as_str(), c.key.as_str()), ("alice", "s3cret"));
        let c = parse_authorization("ApiKey alice:s3cret").unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(parse_authorization("Bearer x"), Err(CredentialsError::Scheme));
        assert_eq!(parse_authorization("Basic !!!"), Err(CredentialsError::Malformed));
        assert_eq!(
            parse_authorization("ApiKey alice"),
            Err(CredentialsError::Malformed)
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn names_are_url_safe() {
        assert!(valid_name("acme-corp.eu_1"));
        for bad in ["", "-x", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
