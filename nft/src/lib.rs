//! podnet's typed nf_tables netlink encoder (being written).
