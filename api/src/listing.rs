//! Query strings of list endpoints: strict parsing of the known parameters,
//! and the Tastypie envelope with its pagination links.
//!
//! Pagination follows what the SDKs do: they ignore `next` and request
//! `offset = meta.offset + meta.limit`, `limit = meta.limit`, so `meta.limit`
//! is always a positive integer and `next` is null on the last page.
//!
//! A page also has a byte budget (`[http] page_bytes`): the store ends a page
//! early when its rows would exceed it. Such a page answers `meta.limit` =
//! the rows it holds, and `next` from there, so a client paging either way
//! resumes exactly after the last row it got.

use crate::error::ApiError;
use crate::input::{integer, no_nul, MAX_OFFSET};
use serde::Serialize;

/// Page size when the client names none (the Docker Cloud default).
pub const DEFAULT_LIMIT: i64 = 25;
/// Largest page; `limit=0` asks for it, as in Tastypie.
pub const MAX_LIMIT: i64 = 1000;

/// The parameters of a query string, in order, with repeats kept.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses a raw query string, refusing any key not in `allowed` and any
    /// value with a NUL byte.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, v) in &pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {k:?}; supported: {}",
                    allowed.join(", ")
                )));
            }
            no_nul(k, v)?;
        }
        Ok(QueryParams { pairs })
    }

    /// The single value of `key`; a key given twice is an error.
    pub fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter {key:?} given more than once"
            )));
        }
        Ok(first)
    }

    /// Every value of `key`, each split on commas.
    pub fn many(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A boolean: true/false, 1/0, yes/no in any case (Python sends `True`).
    pub fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.one(key)? {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" | "" => Ok(Some(false)),
                _ => Err(ApiError::BadRequest(format!(
                    "{key} must be true or false, not {v:?}"
                ))),
            },
        }
    }

    /// The integer value of `key` within `range`, if given.
    pub fn integer(&self, key: &str, range: std::ops::RangeInclusive<i64>) -> Result<Option<i64>, ApiError> {
        self.one(key)?.map(|v| integer(key, v, range)).transpose()
    }

    /// `limit` (any non-negative integer; 0 and anything above
    /// [`MAX_LIMIT`] mean the maximum) and `offset` (0..=[`MAX_OFFSET`]).
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.integer("limit", 0..=i64::MAX)? {
            None => DEFAULT_LIMIT,
            Some(0) => MAX_LIMIT,
            Some(n) => n.min(MAX_LIMIT),
        };
        let offset = self.integer("offset", 0..=MAX_OFFSET)?.unwrap_or(0);
        Ok(PageRequest { limit, offset })
    }

    /// The pairs other than limit and offset, for building page links.
    fn filters(&self) -> impl Iterator<Item = &(String, String)> {
        self.pairs.iter().filter(|(k, _)| k != "limit" && k != "offset")
    }
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size, 1..=MAX_LIMIT.
    pub limit: i64,
    /// Items skipped.
    pub offset: i64,
}

/// The `meta` of a Tastypie list.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Page size.
    pub limit: i64,
    /// URL of the next page, or null.
    pub next: Option<String>,
    /// Items skipped.
    pub offset: i64,
    /// URL of the previous page, or null.
    pub previous: Option<String>,
    /// Matches over all pages.
    pub total_count: i64,
}

/// `{"meta": …, "objects": […]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<T: Serialize> {
    /// Paging.
    pub meta: Meta,
    /// This page.
    pub objects: Vec<T>,
}

impl<T: Serialize> Envelope<T> {
    /// The envelope of one page of `path`'s list. A page with fewer rows
    /// than asked although more follow was cut by its byte budget: its
    /// `limit` becomes the rows it holds (see the module docs).
    pub fn new(path: &str, params: &QueryParams, page: PageRequest, total: i64, objects: Vec<T>) -> Self {
        let held = objects.len() as i64;
        let page = if held > 0 && held < page.limit && page.offset + held < total {
            PageRequest { limit: held, ..page }
        } else {
            page
        };
        let link = |offset: i64| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params.filters() {
                q.append_pair(k, v);
            }
            q.append_pair("limit", &page.limit.to_string());
            q.append_pair("offset", &offset.to_string());
            format!("{path}?{}", q.finish())
        };
        // Checked: a page request is bounded, but the envelope must never
        // answer a wrapped-around (negative) offset whatever it is given.
        let next = page
            .offset
            .checked_add(page.limit)
            .filter(|&n| n < total)
            .map(link);
        let previous = (page.offset > 0).then(|| link(page.offset.saturating_sub(page.limit).max(0)));
        Envelope {
            meta: Meta {
                limit: page.limit,
                next,
                offset: page.offset,
                previous,
                total_count: total,
            },
            objects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_validated() {
        let p = |q: &str| QueryParams::parse(Some(q), &["limit", "offset"]).and_then(|p| p.page());
        assert_eq!(
            p("").unwrap(),
            PageRequest {
                limit: DEFAULT_LIMIT,
                offset: 0
            }
        );
        assert_eq!(p("limit=0").unwrap().limit, MAX_LIMIT);
        assert_eq!(p("limit=5000").unwrap().limit, MAX_LIMIT);
        assert_eq!(
            p("limit=3&offset=6").unwrap(),
            PageRequest { limit: 3, offset: 6 }
        );
        assert_eq!(p(&format!("offset={MAX_OFFSET}")).unwrap().offset, MAX_OFFSET);
        for bad in [
            "limit=-1",
            "offset=-1",
            "offset=9223372036854775807",
            "offset=1000000001",
            "limit=99999999999999999999",
            "offset=%00",
            "limit=x",
            "offset=1.5",
            "limit=1&limit=2",
            "page=2",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_keep_filters_and_stop_at_the_end() {
        let params = QueryParams::parse(
            Some("state=Success&limit=2&offset=2"),
            &["state", "limit", "offset"],
        )
        .unwrap();
        let page = params.page().unwrap();
        let env = Envelope::new("/api/audit/v1/action/", &params, page, 5, vec![1, 2]);
        assert_eq!(
            env.meta.next.as_deref(),
            Some("/api/audit/v1/action/?state=Success&limit=2&offset=4")
        );
        assert_eq!(
            env.meta.previous.as_deref(),
            Some("/api/audit/v1/action/?state=Success&limit=2&offset=0")
        );
        let last = Envelope::new("/x/", &params, PageRequest { limit: 2, offset: 4 }, 5, vec![5]);
        assert_eq!(last.meta.next, None);
        let huge = PageRequest {
            limit: MAX_LIMIT,
            offset: i64::MAX,
        };
        let env = Envelope::new("/x/", &params, huge, i64::MAX, Vec::<i32>::new());
        assert_eq!(env.meta.next, None, "no wrapped-around next page");
        assert!(!env.meta.previous.unwrap().contains("offset=-"));
    }

    #[test]
    fn a_page_cut_short_pages_on_from_its_last_row() {
        let params = QueryParams::parse(Some("limit=0"), &["limit", "offset"]).unwrap();
        let page = params.page().unwrap();
        let env = Envelope::new("/x/", &params, page, 10, vec![1, 2, 3]);
        assert_eq!(env.meta.limit, 3);
        assert_eq!(env.meta.next.as_deref(), Some("/x/?limit=3&offset=3"));
        let last = Envelope::new("/x/", &params, PageRequest { limit: 3, offset: 9 }, 10, vec![10]);
        assert_eq!(
            (last.meta.limit, last.meta.next),
            (3, None),
            "the last page keeps its limit"
        );
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(QueryParams::parse(Some("bogus=1"), &["state"]).is_err());
        let p = QueryParams::parse(Some("state=Success,Failed&state=Pending"), &["state"]).unwrap();
        assert_eq!(p.many("state"), ["Success", "Failed", "Pending"]);
        assert!(p.one("state").is_err());
        let p = QueryParams::parse(Some("f=True"), &["f"]).unwrap();
        assert_eq!(p.flag("f").unwrap(), Some(true));
        let p = QueryParams::parse(Some("f=maybe"), &["f"]).unwrap();
        assert!(p.flag("f").is_err());
    }
}
