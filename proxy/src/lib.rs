//! podnet-proxy (being written).
