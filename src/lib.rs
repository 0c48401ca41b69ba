//! kustomer-import: a resumable, exactly-once batch importer of help-desk exports into
//! Kustomer, and a local sandbox of the Kustomer API to rehearse it against.
//!
//! The binary (`src/main.rs`) is a thin shell over this library; the integration tests and
//! the benchmarks use the same modules. The pipeline reads as the modules do:
//! [`input`] -> [`mapping`] (+ [`rowkey`]), joined in [`rows`] -> [`pipeline`] (reader,
//! planner, worker) -> [`api`] -> [`checkpoint`], with [`report`] telling the user what
//! happened. `validate` runs [`rows`] alone. [`vocabulary`] holds the words [`api`] and
//! [`checkpoint`] both use (record kinds, origins, step states), so neither depends on the
//! other.

pub mod api;
pub mod checkpoint;
pub mod fingerprint;
pub mod history;
pub mod input;
pub mod mapping;
pub mod pipeline;
pub mod report;
pub mod rowkey;
pub mod rows;
pub mod sandbox;
pub mod tally;
pub mod undo;
pub mod users_check;
pub mod verify;
pub mod vocabulary;
