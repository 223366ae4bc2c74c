//! Sweepers that keep the tables small; one file each.

pub mod retention;
pub mod vacuum;
