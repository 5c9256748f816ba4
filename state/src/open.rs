//! Store URLs: `dir:///path` (or a plain path) and `etcd://host:port[,host:port]`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::dir::DirStore;
use crate::etcd::EtcdStore;
use crate::store::{Store, StoreError, StoreResult};

/// Environment variable naming the store for binaries.
pub const STORE_ENV: &str = "PODNET_STORE";
/// The store binaries use when neither a flag nor `PODNET_STORE` names one.
pub const DEFAULT_STORE: &str = "dir:///var/lib/podnet";

/// Where a store URL points, parsed without touching anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Dir(PathBuf),
    /// `host:port` endpoints.
    Etcd(Vec<String>),
}

pub fn parse_store_url(url: &str) -> StoreResult<StoreUrl> {
    let bad = |reason: &str| StoreError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if let Some(path) = url.strip_prefix("dir://") {
        if !path.starts_with('/') {
            return Err(bad(
                "a dir URL needs an absolute path: dir:///var/lib/podnet",
            ));
        }
        return Ok(StoreUrl::Dir(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("etcd://") {
        let mut eps = Vec::new();
        for ep in rest.trim_end_matches('/').split(',') {
            let (host, port) = ep
                .rsplit_once(':')
                .ok_or_else(|| bad("each etcd endpoint is host:port"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("each etcd endpoint is host:port with a numeric port"));
            }
            eps.push(ep.to_string());
        }
        return Ok(StoreUrl::Etcd(eps));
    }
    if url.contains("://") {
        return Err(bad("unknown scheme; use dir:///path or etcd://host:port"));
    }
    if url.is_empty() {
        return Err(bad("empty"));
    }
    Ok(StoreUrl::Dir(PathBuf::from(url)))
}

/// Open the store `url` names. A dir store is created if missing; an etcd
/// store is connected to (failing with `Unreachable` if no endpoint answers).
pub async fn open_store(url: &str) -> StoreResult<Arc<dyn Store>> {
    match parse_store_url(url)? {
        StoreUrl::Dir(p) => Ok(Arc::new(DirStore::open(p)?)),
        StoreUrl::Etcd(eps) => Ok(Arc::new(EtcdStore::connect(eps).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_store_url("dir:///var/lib/podnet").unwrap(),
            StoreUrl::Dir("/var/lib/podnet".into())
        );
        assert_eq!(
            parse_store_url("./state").unwrap(),
            StoreUrl::Dir("./state".into())
        );
        assert_eq!(
            parse_store_url("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap(),
            StoreUrl::Etcd(vec!["127.0.0.1:2379".into(), "10.0.0.2:2379".into()])
        );
        for bad in [
            "dir://relative",
            "etcd://host",
            "etcd://:80",
            "http://x",
            "",
        ] {
            assert!(parse_store_url(bad).is_err(), "{bad}");
        }
    }
}
