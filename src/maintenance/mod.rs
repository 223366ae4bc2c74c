//! Sweepers that keep the tables small, and the check that says what
//! keeps them from it; one file each.

pub mod disabler;
pub mod horizon;
pub mod retention;
pub mod vacuum;
