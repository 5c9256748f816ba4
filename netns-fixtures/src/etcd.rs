//! etcd server harness for tests (being written).
