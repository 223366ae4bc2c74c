//! The demo itself, on an embedded default. It finds or starts a PostgreSQL
//! server, works in a database of its own, runs a signature-verifying
//! receiver and the daemon in-process, emits one event of each type and
//! shows every delivery, the retry and the dashboard's status rows; then
//! removes everything it made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devkit::cluster::ThrowawayCluster;
use devkit::receiver::{Arrival, Receiver, Reply};
use devkit::scratch::ScratchDb;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::{RunArgs, SecretArgs};
use crate::db;
use crate::delivery::sender::SystemResolver;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventType;
use crate::manage::{self, CreateWebhook};
use crate::signing::SecretBox;

/// How long the demo waits for all deliveries before it reports a failure.
const DEMO_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the demo. `database_url` is the server the user named
/// (`--database-url` or `DATABASE_URL`); without one the demo tries the
/// default and else starts a throwaway server. `secret_key` is
/// `WEBHOOKD_SECRET_KEY` if set; else the demo makes one up.
pub async fn run(database_url: Option<String>, secret_key: Option<&str>) -> Result<()> {
    let secret_key = secret_key
        .map(str::to_string)
        .unwrap_or_else(SecretBox::generate_key_base64);
    let mut place = DemoDatabase::open(database_url).await?;
    // Ctrl-C must still clean up: a throwaway server outlives this process.
    let outcome = tokio::select! {
        outcome = run_in(&place.url, &secret_key) => outcome,
        _ = crate::shutdown::wait_for_signal() => Err(Error::other("demo interrupted; cleaned up".to_string())),
    };
    place.close().await;
    outcome
}

/// Where the demo's data lives, and how to get rid of it.
struct DemoDatabase {
    url: String,
    /// The database the demo created on a server it was given or found.
    scratch: Option<ScratchDb>,
    cluster: Option<ThrowawayCluster>,
}

impl DemoDatabase {
    async fn open(database_url: Option<String>) -> Result<DemoDatabase> {
        // The product's own connection rules (TLS, verify-full), not the kit's.
        let (server_url, admin) = match database_url {
            // A server the user named is never swapped for a throwaway one,
            // so the error says how to get that instead.
            Some(url) => match db::connect_single(&url).await {
                Ok(admin) => (url, admin),
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    return Err(Error::unavailable(format!(
                        "{err}; the demo starts its own throwaway server only when \
                         neither --database-url nor DATABASE_URL is set"
                    )))
                }
                Err(err) => return Err(err),
            },
            None => {
                let default = db::DATABASE_URL_DEFAULT.to_string();
                match db::connect_single(&default).await {
                    Ok(admin) => (default, admin),
                    Err(_) => return DemoDatabase::throwaway().await,
                }
            }
        };
        let scratch = ScratchDb::create_with(&admin, &server_url, "webhookd_demo")
            .await
            .map_err(|err| Error::db("creating the demo database", err))?;
        println!(
            "  database: {} on {} (dropped afterwards)",
            scratch.name(),
            db::redact_url(&server_url)
        );
        Ok(DemoDatabase {
            url: scratch.url().to_string(),
            scratch: Some(scratch),
            cluster: None,
        })
    }

    async fn throwaway() -> Result<DemoDatabase> {
        println!("No PostgreSQL answers at 127.0.0.1:5432; starting a throwaway server from the installed binaries…");
        let cluster = ThrowawayCluster::start()
            .await
            .map_err(|err| Error::other(format!("cannot start a throwaway PostgreSQL: {err}")))?;
        let url = cluster.url();
        println!("  database: throwaway cluster at {url} (removed afterwards)");
        Ok(DemoDatabase {
            url,
            scratch: None,
            cluster: Some(cluster),
        })
    }

    async fn close(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            match db::connect_single(scratch.server_url()).await {
                Ok(admin) => {
                    let _ = scratch.drop_with(&admin).await;
                }
                // Dropping the value tries once more on its own.
                Err(_) => drop(scratch),
            }
        }
        if let Some(mut cluster) = self.cluster.take() {
            if let Err(err) = cluster.stop().await {
                eprintln!("webhookd: {err}");
            }
        }
    }
}

async fn run_in(url: &str, secret_key: &str) -> Result<()> {
    let mut client = db::connect_single(url).await?;
    db::migrate(&mut client).await?;
    let (receiver, mut arrivals) = start_receiver().await?;
    let organization = Uuid::new_v4();
    create_webhooks(&client, secret_key, &receiver, organization).await?;
    let daemon = start_daemon(url, secret_key).await?;

    let started = Instant::now();
    for (index, event) in EventType::ALL.into_iter().enumerate() {
        let data = devkit::sample_data(event.as_str(), index);
        crate::emit(&client, organization, event, &data).await?;
    }
    println!("\nEmitted one event of each of the 11 types for organization {organization}; the daemon delivers them:\n");

    let expected = EventType::ALL.len() * 2;
    let (delivered, failure) = watch_arrivals(&mut arrivals, started, expected).await;
    wait_until_settled(&client, organization).await?;
    println!(
        "\n{delivered} of {expected} deliveries accepted in {:.1}s. outbox.webhook_status now says:\n",
        started.elapsed().as_secs_f64()
    );
    print_status(&client, organization).await?;

    daemon.shutdown().await;
    match failure {
        Some(reason) => Err(Error::other(format!("demo failed: {reason}"))),
        None => {
            println!(
                "\nDemo finished: every delivery was signed, verified and recorded. Cleaning up."
            );
            Ok(())
        }
    }
}

/// The verifying receiver, and the channel its arrivals come in on.
async fn start_receiver() -> Result<(Receiver, mpsc::UnboundedReceiver<Arrival>)> {
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let receiver = Receiver::builder()
        .respond(answer)
        .events(arrivals_tx)
        .start()
        .await
        .map_err(|err| Error::other(format!("cannot start the demo receiver: {err}")))?;
    println!(
        "  receiver: http://{} (verifies every signature)",
        receiver.address
    );
    Ok((receiver, arrivals))
}

/// One healthy and one flaky webhook on the receiver, which learns each
/// secret so it can verify the signatures.
async fn create_webhooks(
    client: &tokio_postgres::Client,
    secret_key: &str,
    receiver: &Receiver,
    organization: Uuid,
) -> Result<()> {
    let secrets = SecretBox::from_base64(secret_key)?;
    for (name, label) in [
        ("healthy", "healthy receiver"),
        ("flaky", "flaky receiver (503 on first attempts)"),
    ] {
        let path = format!("/{name}");
        let request = CreateWebhook {
            organization_id: organization,
            url: &receiver.url(&path),
            label,
            allow_private_targets: true,
            signature_scheme: Default::default(),
        };
        let created = manage::create(client, &secrets, &SystemResolver, &request).await?;
        receiver.verify(&path, created.secret.as_deref().unwrap_or_default());
        println!("  webhook:  {label:<40} {}  {}", created.id, created.url);
    }
    Ok(())
}

/// The daemon in this process, with short delays so the retry shows.
async fn start_daemon(url: &str, secret_key: &str) -> Result<crate::daemon::Running> {
    let args = RunArgs {
        retry_base_delay: Duration::from_secs(1),
        allow_private_targets: true,
        poll_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        ..RunArgs::default()
    };
    let config = args.validate(
        url,
        &SecretArgs::with_key(secret_key),
        Arc::new(SystemResolver),
    )?;
    crate::daemon::Daemon::start(config).await
}

/// Prints each arrival until `expected` were accepted or the deadline
/// passed; returns how many were accepted and what went wrong, if anything.
async fn watch_arrivals(
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    started: Instant,
    expected: usize,
) -> (usize, Option<String>) {
    let mut delivered = 0;
    let deadline = tokio::time::Instant::now() + DEMO_DEADLINE;
    let mut failure = None;
    while delivered < expected {
        tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some(arrival) => {
                    print_arrival(started, &arrival);
                    if arrival.signature_ok != Some(true) {
                        failure = Some("a delivery arrived with a signature that does not verify".to_string());
                    }
                    if arrival.status == 200 {
                        delivered += 1;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                failure = Some(format!("only {delivered} of {expected} deliveries arrived within {}s", DEMO_DEADLINE.as_secs()));
                break;
            }
        }
    }
    (delivered, failure)
}

/// The demo receiver's answer: 404 off its two endpoints, 401 when the
/// signature does not verify, 503 on the flaky endpoint's first attempt of
/// each delivery, else 200.
fn answer(arrival: &Arrival) -> Reply {
    let status = match (arrival.path.as_str(), arrival.signature_ok) {
        ("/healthy" | "/flaky", Some(false)) => 401,
        ("/flaky", Some(true)) if !arrival.repeat => 503,
        ("/healthy" | "/flaky", Some(true)) => 200,
        _ => 404,
    };
    Reply::status(status)
}

fn print_arrival(started: Instant, arrival: &Arrival) {
    let verdict = if arrival.signature_ok == Some(true) {
        "signature ok"
    } else {
        "SIGNATURE INVALID"
    };
    let note = match (arrival.status, arrival.repeat) {
        (503, _) => "  (fails on purpose; retried in ~1s)",
        (200, true) => "  (retry succeeded)",
        _ => "",
    };
    println!(
        "  +{:>6.3}s  {:<8} {:<20} delivery {}  {verdict}  -> HTTP {}{note}",
        started.elapsed().as_secs_f64(),
        arrival.path.trim_start_matches('/'),
        arrival.header("x-productbridge-event"),
        arrival.delivery_id(),
        arrival.status,
    );
}

/// Waits (bounded) until no delivery of the organization is pending: the
/// last write-backs land a moment after the receiver answered.
async fn wait_until_settled(client: &tokio_postgres::Client, organization: Uuid) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let webhooks = manage::list(client, organization).await?;
        let pending = |webhook: &manage::WebhookView| {
            webhook
                .health
                .as_ref()
                .map_or(0, |health| health.pending_deliveries)
        };
        if webhooks.iter().all(|webhook| pending(webhook) == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The organization's rows of `outbox.webhook_status`, as a table.
async fn print_status(client: &tokio_postgres::Client, organization: Uuid) -> Result<()> {
    let row = |cells: [&str; 7]| {
        println!(
            "  {:<40} {:<7} {:<25} {:<25} {:<30} {:>7} {:>6}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        )
    };
    row([
        "label",
        "status",
        "last_success_at",
        "last_failure_at",
        "last_failure_reason",
        "pending",
        "failed",
    ]);
    for webhook in manage::list(client, organization).await? {
        let Some(health) = webhook.health else {
            continue;
        };
        row([
            &webhook.label,
            &webhook.status,
            health.last_success_at.as_deref().unwrap_or("-"),
            health.last_failure_at.as_deref().unwrap_or("-"),
            health.last_failure_reason.as_deref().unwrap_or("-"),
            &health.pending_deliveries.to_string(),
            &health.failed_deliveries.to_string(),
        ]);
    }
    Ok(())
}
