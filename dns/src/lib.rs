//! podnet-dns (being written).
