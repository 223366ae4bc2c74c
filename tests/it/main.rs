//! Integration tests against a real PostgreSQL and real receivers on 127.0.0.1.
//! One binary made of modules, so it links once.

mod harness;

mod cli;
mod delivery;
mod management;
mod shutdown;
mod tls;
mod validation;
