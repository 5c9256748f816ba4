//! Multi-node cluster fixture (being written).
