//! kustomer-import: a resumable, exactly-once batch importer of help-desk exports into
//! Kustomer, and a local sandbox of the Kustomer API to rehearse it against.
//!
//! The binary (`src/main.rs`) is a thin shell over this library; the integration tests and
//! the benchmarks use the same modules.

pub mod sandbox;
