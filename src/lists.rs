//! The default lists as operators manage them (`RiskAdmin`, the `--lists`
//! file): values normalised and keyed exactly as the scoring path looks
//! them up, entries added with what was said of them, taken off, and
//! listed back a page at a time.

use crate::engine::{Engine, ip_key};
use crate::error::ServiceError;
use crate::state::{Commit, Key, List, ListEntry, ListSource};
use crate::validate::FieldError;
use std::net::IpAddr;

/// Most values in one request.
pub const MAX_VALUES: usize = 1000;
/// Longest value, and longest reason, in bytes.
pub const MAX_TEXT: usize = 512;
/// Entries per page when the request does not say.
pub const DEFAULT_PAGE: usize = 100;
/// Most entries per page.
pub const MAX_PAGE: usize = 1000;

/// `value` as `list` holds it (emails lower-cased, IP addresses in their
/// canonical text) and the key the scoring path looks up for it.
pub fn normalise(engine: &Engine, list: List, value: &str) -> Result<(String, Key), FieldError> {
    let store = engine.store();
    let bad = |why: &str| FieldError::new("values", format!("{value:?} {why}"));
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if value.len() > MAX_TEXT {
        return Err(FieldError::new(
            "values",
            format!("a value is longer than {MAX_TEXT} bytes"),
        ));
    }
    match list {
        List::BlockEmail | List::AllowEmail => {
            let v = value.to_lowercase();
            let key = store.key(v.as_bytes());
            Ok((v, key))
        }
        List::BlockIp | List::AllowIp => {
            let ip: IpAddr = value.parse().map_err(|_| bad("is not an IP address"))?;
            let ip = ip.to_canonical();
            Ok((ip.to_string(), ip_key(&**store, ip)))
        }
        _ => Ok((value.to_owned(), store.key(value.as_bytes()))),
    }
}

/// The list named `name`.
pub fn list_named(name: &str) -> Result<List, FieldError> {
    List::from_name(name).ok_or_else(|| {
        let names: Vec<_> = List::ALL.iter().map(|l| l.name()).collect();
        FieldError::new(
            "list",
            format!("{name:?} is not a list; lists are {}", names.join(", ")),
        )
    })
}

fn check_count(values: usize) -> Result<(), FieldError> {
    if values > MAX_VALUES {
        return Err(FieldError::new(
            "values",
            format!("{values} values; at most {MAX_VALUES} per request"),
        ));
    }
    Ok(())
}

impl Engine {
    /// Adds `values` to `list` (those not on it yet) with `reason` and
    /// expiry; how many were added and the commit to await. Every value
    /// is checked before any is added.
    pub fn add_list_items<S: AsRef<str>>(
        &self,
        list: List,
        values: &[S],
        reason: &str,
        expires_at_ms: i64,
        source: ListSource,
        now_ms: i64,
    ) -> Result<(u32, Commit), ServiceError> {
        check_count(values.len())?;
        if reason.len() > MAX_TEXT {
            return Err(
                FieldError::new("reason", format!("is longer than {MAX_TEXT} bytes")).into(),
            );
        }
        if expires_at_ms < 0 {
            return Err(FieldError::new("expires_at_ms", "is negative").into());
        }
        let keyed = values
            .iter()
            .map(|v| normalise(self, list, v.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut added = 0;
        let mut commits = Vec::new();
        for (value, key) in keyed {
            let entry = ListEntry {
                value,
                added_at_ms: now_ms,
                reason: reason.to_owned(),
                expires_at_ms,
                source,
                payment_id: String::new(),
            };
            if let Some(commit) = self.store().list_add(list, key, entry)? {
                added += 1;
                self.metrics().list_addition(list);
                commits.push(commit);
            }
        }
        tracing::info!(
            list = list.name(),
            added,
            source = source.name(),
            "list entries added"
        );
        Ok((added, Commit::all(commits)))
    }

    /// Takes `values` off `list`; how many were on it and the commit to
    /// await.
    pub fn remove_list_items<S: AsRef<str>>(
        &self,
        list: List,
        values: &[S],
    ) -> Result<(u32, Commit), ServiceError> {
        check_count(values.len())?;
        let keyed = values
            .iter()
            .map(|v| normalise(self, list, v.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut removed = 0;
        let mut commits = Vec::new();
        for (_, key) in keyed {
            if let Some(commit) = self.store().list_remove(list, key)? {
                removed += 1;
                self.metrics().list_removal(list);
                commits.push(commit);
            }
        }
        tracing::info!(list = list.name(), removed, "list entries removed");
        Ok((removed, Commit::all(commits)))
    }

    /// A page of `list`'s entries from `page_token` (empty: the first) and
    /// the token of the next page (empty: the last page).
    pub fn list_items(
        &self,
        list: List,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<ListEntry>, String), ServiceError> {
        if page_size > MAX_PAGE {
            return Err(FieldError::new("page_size", format!("is more than {MAX_PAGE}")).into());
        }
        let size = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size
        };
        let after = match page_token {
            "" => None,
            t => Some(Key(u64::from_str_radix(t, 16).map_err(|_| {
                FieldError::new("page_token", "is not a token this server gave")
            })?)),
        };
        // One more than asked: whether there is a next page.
        let mut items = self.store().list_items(list, after, size + 1);
        let next = if items.len() > size {
            items.truncate(size);
            items
                .last()
                .map_or(String::new(), |(k, _)| format!("{:016x}", k.0))
        } else {
            String::new()
        };
        Ok((items.into_iter().map(|(_, e)| e).collect(), next))
    }
}
