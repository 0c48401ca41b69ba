//! A local fake of the Kustomer API (placeholder; the real one is being written).
