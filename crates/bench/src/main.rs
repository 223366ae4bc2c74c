//! `webhookd-bench`: one command that measures webhookd on this machine.
//!
//! It creates a fresh database per scenario on the server at `DATABASE_URL`,
//! runs a counting receiver on 127.0.0.1 (its own capacity is measured
//! first), runs real `webhookd run` processes (the release binary next to
//! this one), drives producers, and prints a table plus JSON.
//!
//! `cargo build --release && cargo run --release -p webhookd-bench -- [--quick] [--scenarios a,b]`

mod pgstats;
mod pki;
mod process;
mod scenarios;
mod sink;
mod sql;

/// Where the bench works unless told otherwise (see the flag's note).
const BENCH_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

use std::time::Duration;

use clap::Parser;
use scenarios::Scheme;

/// Benchmark webhookd against a local PostgreSQL and a local receiver.
#[derive(Debug, Parser)]
#[command(name = "webhookd-bench")]
struct Args {
    /// PostgreSQL server; each scenario works in a database it creates and drops.
    /// The default asks for plaintext: the local server of a development
    /// machine usually offers TLS (Debian's does), which the daemon's default
    /// `sslmode=prefer` would then use, and earlier results were measured
    /// without it. Pass a URL with `sslmode=prefer` to measure with TLS.
    #[arg(long, env = "DATABASE_URL", default_value = BENCH_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Comma-separated scenarios: ceiling, throughput, fanout, latency, away, isolation,
    /// replicas, producer, backlog, soak, xmin; and tenants (many receiver hosts, over HTTP then
    /// HTTPS; tenants-http or tenants-https for one of them; only when named).
    /// The ceiling runs first wherever it is named; the delivery scenarios report their
    /// rate as a share of it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,throughput,fanout,latency,away,isolation,replicas,producer,backlog,soak,xmin"
    )]
    scenarios: Vec<String>,
    /// Smaller sizes, for a quick look (about a minute and a half).
    #[arg(long)]
    quick: bool,
    /// Soak: events per second (default: 3,500, or 1,000 with --quick).
    #[arg(long)]
    soak_rate: Option<u64>,
    /// Soak: how long, in seconds (default: 600, or 60 with --quick).
    #[arg(long)]
    soak_seconds: Option<u64>,
    /// xmin (a transaction held open meanwhile): events per second (default: 50).
    #[arg(long)]
    xmin_rate: Option<u64>,
    /// xmin: how long, in seconds, the transaction stays open and events flow (default: 300,
    /// or 20 with --quick).
    #[arg(long)]
    xmin_seconds: Option<u64>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    if !process::webhookd_binary().exists() {
        eprintln!(
            "webhookd-bench: {} not found: run `cargo build --release` first",
            process::webhookd_binary().display()
        );
        return std::process::ExitCode::from(2);
    }
    let bench = match scenarios::Bench::new(&args.database_url).await {
        Ok(bench) => bench,
        Err(err) => {
            eprintln!("webhookd-bench: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    let capacity = sink::measure_capacity(&bench.sink, 64, Duration::from_secs(2)).await;
    bench.sink.tally.reset();
    println!("machine: {} cores; receiver capacity: {capacity:.0} requests/s (64 keep-alive clients in-process)\n", process::cores());

    let mut sizes = if args.quick {
        scenarios::Sizes::quick()
    } else {
        scenarios::Sizes::full()
    };
    sizes.override_soak(args.soak_rate, args.soak_seconds);
    sizes.override_xmin(args.xmin_rate, args.xmin_seconds);
    let mut results = vec![
        serde_json::json!({"scenario": "receiver_capacity", "requests_per_second": capacity.round()}),
    ];
    // The ceiling first: the others compare with it.
    let ceiling_first = args.scenarios.iter().filter(|name| *name == "ceiling");
    let others = args.scenarios.iter().filter(|name| *name != "ceiling");
    for name in ceiling_first.take(1).chain(others) {
        let outcome = match name.as_str() {
            "ceiling" => bench.ceiling(&sizes).await,
            "throughput" => bench.throughput(&sizes).await,
            "fanout" => bench.fanout(&sizes).await,
            "latency" => bench.latency(&sizes).await,
            "away" => bench.away(&sizes).await,
            "isolation" => bench.isolation(&sizes).await,
            "replicas" => bench.replicas(&sizes).await,
            "producer" => bench.producer(&sizes).await,
            "backlog" => bench.backlog(&sizes).await,
            "soak" => bench.soak(&sizes).await,
            "xmin" => bench.xmin(&sizes).await,
            "tenants" => bench.tenants(&sizes, &[Scheme::Http, Scheme::Https]).await,
            "tenants-http" => bench.tenants(&sizes, &[Scheme::Http]).await,
            "tenants-https" => bench.tenants(&sizes, &[Scheme::Https]).await,
            other => Err(format!("unknown scenario {other}").into()),
        };
        match outcome {
            Ok(result) => results.push(result),
            Err(err) => {
                let mut text = err.to_string();
                let mut cause = std::error::Error::source(err.as_ref());
                while let Some(inner) = cause {
                    text = format!("{text}: {inner}");
                    cause = inner.source();
                }
                eprintln!("webhookd-bench: scenario {name} failed: {text}");
                return std::process::ExitCode::from(1);
            }
        }
    }
    let json = serde_json::Value::Array(results);
    println!("\nJSON:\n{json}");
    if let Some(path) = args.json {
        if let Err(err) = std::fs::write(&path, format!("{json:#}\n")) {
            eprintln!("webhookd-bench: cannot write {}: {err}", path.display());
            return std::process::ExitCode::from(1);
        }
    }
    std::process::ExitCode::SUCCESS
}
