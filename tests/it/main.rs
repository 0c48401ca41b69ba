//! Integration tests: the real binary against the sandbox on 127.0.0.1 (or against small
//! foreign servers), asserting on what lands in the sandbox, the checkpoint, the errors
//! file and the exit code. One test binary; `harness.rs` holds the shared set-up.

mod harness;

mod bulk;
mod check_users;
mod checkpoint;
mod companies;
mod earlier_release;
mod export_maps;
mod exports;
mod faults;
mod first_hour;
mod foreign;
mod history;
mod history_sync;
mod import;
mod operate;
mod pauses;
mod people;
mod streams;
mod sync;
mod tags;
mod target;
mod undo;
mod verify;
