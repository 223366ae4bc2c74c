//! Integration tests against a real PostgreSQL and real receivers on 127.0.0.1.
//! One binary made of modules, so it links once.

mod harness;

mod api;
mod cli;
mod clusters;
mod dashboard;
mod db_tls;
mod delivery;
mod deploy;
mod emit_many;
mod failover;
mod fan_out_lease;
mod fencing;
mod horizon;
mod keys;
mod lifecycle;
mod logs;
mod maintenance;
mod management;
mod operator_page;
mod outages;
mod per_webhook_state;
mod pooler;
mod producers;
mod receivers;
mod references;
mod replicas;
mod samples;
mod shutdown;
mod signature_scheme;
mod ssrf;
mod standard_webhooks;
mod tls;
mod upgrade;
mod validation;
mod write_back;
