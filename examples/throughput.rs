//! A quick throughput check: N committed events for one webhook, drained by one
//! in-process daemon into a counting receiver on 127.0.0.1.
//!
//! `cargo run --release --example throughput -- 20000`
//! Uses the server at DATABASE_URL in a fresh database it drops afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use uuid::Uuid;
use webhookd::config::{RunArgs, SecretArgs};
use webhookd::delivery::sender::SystemResolver;
use webhookd::signing::SecretBox;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: i64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let server =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| webhookd::db::DATABASE_URL_DEFAULT.into());
    let name = format!(
        "webhookd_throughput_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let admin = webhookd::db::connect_single(&server).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = format!(
        "{}/{name}",
        &server[..server.rfind('/').unwrap_or(server.len())]
    );
    let result = run(&url, events).await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await?;
    result
}

async fn run(url: &str, events: i64) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = webhookd::db::connect_single(url).await?;
    webhookd::db::migrate(&mut client).await?;
    let arrived = Arc::new(AtomicU64::new(0));
    let address = receiver(arrived.clone()).await?;

    let key = SecretBox::generate_key_base64();
    let secrets = SecretBox::from_base64(&key)?;
    let org = Uuid::new_v4();
    webhookd::manage::create(
        &client,
        &secrets,
        &webhookd::delivery::sender::SystemResolver,
        &webhookd::manage::CreateWebhook {
            organization_id: org,
            url: &format!("http://{address}/hook"),
            label: "throughput",
            allow_private_targets: true,
        },
    )
    .await?;
    client
        .execute(
            "INSERT INTO outbox.events (organization_id, event, data)
             SELECT $1, 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p' || i)
             FROM generate_series(1, $2::bigint) AS i",
            &[&org, &events],
        )
        .await?;
    println!("{events} events committed; starting the daemon");

    let args = RunArgs {
        allow_private_targets: true,
        admin_addr: ([127, 0, 0, 1], 0).into(),
        ..RunArgs::default()
    };
    let secrets = SecretArgs::with_key(&key);
    let config = args.validate(url, &secrets, Arc::new(SystemResolver))?;
    let (trigger, shutdown) = webhookd::shutdown::channel();
    let started = Instant::now();
    let daemon = tokio::spawn(webhookd::daemon::run(config, shutdown));
    let expected = events as u64;
    let deadline = started + Duration::from_secs(600);
    loop {
        let delivered: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
                &[],
            )
            .await?
            .get(0);
        if delivered as u64 >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    trigger.trigger();
    daemon.await??;
    println!(
        "{} requests arrived, {expected} recorded delivered in {:.2}s: {:.0} deliveries/s",
        arrived.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        expected as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Counts requests and answers 204; nothing else, so it is not the bottleneck.
async fn receiver(arrived: Arc<AtomicU64>) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let arrived = arrived.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        arrived.fetch_add(1, Ordering::Relaxed);
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}
