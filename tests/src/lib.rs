//! End-to-end tests of podnet on a simulated cluster (being written).
