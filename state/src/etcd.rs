//! etcd store (being written).
