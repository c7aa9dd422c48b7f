//! The rules every value a client sends must pass before it is used: numbers
//! within their range, dates that both stores can hold, strings without NUL
//! bytes. A value that breaks one is a 400 naming the parameter or field, on
//! SQLite and PostgreSQL alike, instead of a panic, an overflow or a
//! database error (PostgreSQL refuses NUL in `text` and `jsonb`, and dates
//! past its range).

use crate::error::{ApiError, ApiResult};
use serde_json::Value;
use std::ops::RangeInclusive;

/// Largest `offset` a list accepts: far past any real listing, and small
/// enough that `offset + limit` never overflows.
pub const MAX_OFFSET: i64 = 1_000_000_000;

/// Parses `value` as an integer within `range`; `key` names it in the error.
pub fn integer(key: &str, value: &str, range: RangeInclusive<i64>) -> ApiResult<i64> {
    let refuse = || {
        ApiError::BadRequest(format!(
            "{key} must be an integer from {} to {}, not {value:?}",
            range.start(),
            range.end()
        ))
    };
    let n: i64 = value.trim().parse().map_err(|_| refuse())?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(refuse())
    }
}

/// Refuses a string with a NUL byte; `field` names it in the error.
pub fn no_nul(field: &str, value: &str) -> ApiResult<()> {
    if value.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{field} must not contain a NUL byte"
        )));
    }
    Ok(())
}

/// Refuses a JSON document with a NUL byte in any string or key; the error
/// names where (`name`, `env.PATH`, `items[2]`).
pub fn json_without_nul(value: &Value) -> ApiResult<()> {
    fn walk(v: &Value, path: &mut String) -> ApiResult<()> {
        match v {
            Value::String(s) => no_nul(if path.is_empty() { "body" } else { path }, s),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    // A NUL in the key itself: name the key as far as it is printable.
                    path.push_str(&k.replace('\0', "\\0"));
                    if k.contains('\0') {
                        return Err(ApiError::BadRequest(format!(
                            "field name {path:?} must not contain a NUL byte"
                        )));
                    }
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }
    walk(value, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_parsed_within_their_range() {
        assert_eq!(integer("offset", " 7 ", 0..=10).unwrap(), 7);
        for bad in ["-1", "11", "x", "1.5", "", "99999999999999999999"] {
            let e = integer("offset", bad, 0..=10).unwrap_err().to_string();
            assert!(e.starts_with("offset must be an integer from 0 to 10"), "{e}");
        }
    }

    #[test]
    fn nul_bytes_are_refused_with_the_field_named() {
        assert!(no_nul("name", "fine").is_ok());
        assert_eq!(
            no_nul("name", "a\0b").unwrap_err().to_string(),
            "name must not contain a NUL byte"
        );
        assert!(json_without_nul(&json!({"name": "ok", "env": {"A": ["x"]}})).is_ok());
        let e = json_without_nul(&json!({"env": {"A": ["x", "y\u{0}"]}})).unwrap_err();
        assert_eq!(e.to_string(), "env.A[1] must not contain a NUL byte");
        let e = json_without_nul(&json!({"a\u{0}b": 1})).unwrap_err();
        assert!(e.to_string().contains("a\\\\0b"), "{e}");
        assert!(json_without_nul(&json!("\u{0}")).is_err());
    }
}
