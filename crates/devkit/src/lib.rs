//! webhookd's development kit: what tests, the benchmark and `webhookd demo`
//! need around the product, kept out of the product itself.
//!
//! - [`cluster`]: a throwaway PostgreSQL server (and streaming standbys) from
//!   the installed binaries.
//! - [`scratch`]: a fresh, uniquely named database on a server, dropped
//!   afterwards.
//! - [`launcher`]: the `webhookd` binary as a child process, its output read
//!   line by line, signals and exit status.
//! - [`receiver`]: a configurable HTTP(S) receiver on 127.0.0.1 that records
//!   arrivals and checks signatures independently of the product.
//! - [`sample`]: a valid `data` object for every event type.
//!
//! It does not depend on the `webhookd` package (the product's demo depends
//! on it), so event types are plain strings here.

pub mod cluster;
pub mod launcher;
pub mod pg;
pub mod receiver;
pub mod sample;
pub mod scratch;

pub use sample::sample_data;
