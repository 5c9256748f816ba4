//! Network-namespace test fixtures (being written).
pub mod cluster;
pub mod etcd;
