//! The command line (docs/CONTRACT.md §6): argument definitions and what each command does.
//! `main` only parses, calls [`execute`] and maps errors to exit codes.
//! Recover and the deliveries listing are in [`deliveries`].

mod deliveries;

use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use uuid::Uuid;

use crate::config::{RunArgs, SecretArgs};
use crate::db;
use crate::delivery::sender::SystemResolver;
use crate::error::{Error, Result};
use crate::manage::{self, CreateWebhook, Enabled, SignatureScheme};
use crate::shutdown;
use crate::telemetry::LogFormat;
pub use deliveries::{DeliveriesCommand, RecoverArgs};

/// webhookd delivers ProductBridge webhooks out of a PostgreSQL outbox.
#[derive(Debug, Parser)]
#[command(name = "webhookd", version, about, long_about = None)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = db::DATABASE_URL_DEFAULT, global = true, hide_env_values = true)]
    pub database_url: String,
    /// Log format.
    #[arg(
        long,
        env = "WEBHOOKD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// The secrets, from the environment.
    #[command(flatten)]
    pub secrets: SecretArgs,
    /// Whether `--database-url` or `DATABASE_URL` was given rather than
    /// defaulted (the demo falls back to a server of its own only then).
    #[arg(skip)]
    pub database_url_given: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments and environment (stage one of the
    /// configuration, see `config`).
    pub fn try_parse_args() -> Result<Cli, clap::Error> {
        let matches = Cli::command().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.database_url_given = matches
            .value_source("database_url")
            .is_some_and(|source| source != clap::parser::ValueSource::DefaultValue);
        Ok(cli)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the outbox schema (idempotent).
    Migrate {
        /// Change nothing: exit 0 only when the schema is exactly what this
        /// binary needs, otherwise say in one line what differs (exit 2).
        #[arg(long)]
        check: bool,
    },
    /// Run the delivery daemon until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Manage webhooks.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Manage the keys that encrypt webhook secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Emit one event (validated like `outbox.emit`); prints the event id.
    Emit {
        /// Organization UUID.
        #[arg(long, value_name = "UUID")]
        org: Uuid,
        /// Event type, e.g. post.created.
        #[arg(long, value_name = "TYPE")]
        event: String,
        /// The event's data, a JSON object.
        #[arg(long, value_name = "JSON")]
        data: String,
    },
    /// Put a failed or delivered delivery back to pending for one more round of attempts.
    Redeliver {
        /// Delivery UUID.
        delivery_id: Uuid,
    },
    /// Put a webhook's failed deliveries created in a time range back to
    /// pending for a new round of attempts; prints {"requeued": N}.
    Recover(RecoverArgs),
    /// Look at a webhook's deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Run a self-contained demonstration: database, receiver, webhooks, events, retries.
    Demo,
}

/// `webhookd webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create a webhook; prints it as JSON with its secret (shown only this once).
    Create {
        /// Organization UUID.
        #[arg(long, value_name = "UUID")]
        org: Uuid,
        /// Target URL (https://, public address).
        #[arg(long)]
        url: String,
        /// A label for people.
        #[arg(long, default_value = "")]
        label: String,
        /// Allow http:// and loopback/private addresses (tests, local use).
        #[arg(long, env = "WEBHOOKD_ALLOW_PRIVATE_TARGETS", value_parser = clap::builder::BoolishValueParser::new())]
        allow_private_targets: bool,
        /// How requests are signed: productbridge, or standard for the
        /// Standard Webhooks headers as well (docs/CONTRACT.md §1).
        #[arg(long, default_value = "productbridge", value_parser = signature_scheme, value_name = "productbridge|standard")]
        signature_scheme: SignatureScheme,
    },
    /// List an organization's webhooks with their status, as a JSON array.
    List {
        /// Organization UUID.
        #[arg(long, value_name = "UUID")]
        org: Uuid,
    },
    /// Revoke a webhook and cancel its pending deliveries (idempotent).
    Revoke {
        /// Webhook UUID.
        webhook_id: Uuid,
    },
    /// Make a disabled webhook active again (then `recover` replays what
    /// failed meanwhile). A revoked webhook cannot be enabled.
    Enable {
        /// Webhook UUID.
        webhook_id: Uuid,
    },
}

/// `webhookd keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every webhook secret under WEBHOOKD_SECRET_KEY, opening each
    /// with it or a key in WEBHOOKD_SECRET_KEY_PREVIOUS; prints {"reencrypted": N}.
    /// Idempotent, and safe beside running daemons (see docs/KEY-ROTATION.md).
    Rotate,
}

/// Runs one command to completion.
pub async fn execute(cli: Cli) -> Result<()> {
    let url = cli.database_url.as_str();
    let secrets = &cli.secrets;
    match cli.command {
        Command::Migrate { check } => migrate_command(url, check).await,
        Command::Run(args) => {
            let stop = shutdown::StopSignals::install();
            let config = args.validate(url, secrets, Arc::new(SystemResolver))?;
            let (trigger, shutdown) = shutdown::channel();
            tokio::spawn(async move {
                stop.wait().await;
                trigger.trigger();
            });
            crate::daemon::run(config, shutdown).await
        }
        Command::Webhooks(command) => webhooks_command(url, secrets, command).await,
        Command::Keys(KeysCommand::Rotate) => rotate_keys(url, secrets).await,
        Command::Emit { org, event, data } => {
            let event = manage::NewEvent::parse(org, event, &data)?;
            let client = connected(url).await?;
            let id = manage::emit(&client, &event).await?;
            println!("{id}");
            Ok(())
        }
        Command::Redeliver { delivery_id } => {
            let client = connected(url).await?;
            manage::redeliver(&client, delivery_id).await?;
            println!("delivery {delivery_id} is pending again");
            Ok(())
        }
        Command::Recover(args) => deliveries::recover(url, args).await,
        Command::Deliveries(command) => deliveries::deliveries(url, command).await,
        Command::Demo => {
            let server = cli.database_url_given.then(|| url.to_string());
            crate::demo::run(server, secrets.current_key()).await
        }
    }
}

/// `webhookd migrate [--check]`. A schema newer than this binary (a newer
/// release migrated it) is not an error for `migrate`: everything this binary
/// needs is there, so it says so and exits 0; `--check` is the strict one.
async fn migrate_command(url: &str, check: bool) -> Result<()> {
    let mut client = db::connect_single(url).await?;
    if check {
        let state = db::schema_state(&client).await?;
        state.require_current()?;
        println!("{}", state.describe());
        return Ok(());
    }
    let applied = db::migrate(&mut client).await?;
    let state = db::schema_state(&client).await?;
    match (&state, applied.is_empty()) {
        (db::SchemaState::Newer { .. }, true) => {
            println!("{}; nothing to apply", state.describe())
        }
        (db::SchemaState::Newer { .. }, false) => {
            println!("applied migrations {applied:?}; {}", state.describe())
        }
        (_, true) => println!("schema is up to date (version {})", db::SCHEMA_VERSION),
        (_, false) => println!(
            "applied migrations {applied:?}; schema is at version {}",
            db::SCHEMA_VERSION
        ),
    }
    Ok(())
}

async fn webhooks_command(url: &str, secrets: &SecretArgs, command: WebhooksCommand) -> Result<()> {
    match command {
        WebhooksCommand::Create {
            org,
            url: target,
            label,
            allow_private_targets,
            signature_scheme,
        } => {
            let request = CreateWebhook {
                organization_id: org,
                url: &target,
                label: &label,
                allow_private_targets,
                signature_scheme,
            };
            manage::validate(&request)?;
            let keyring = secrets.keyring()?;
            let client = connected(url).await?;
            let elsewhere = crate::keys::sealed_elsewhere(&client, &keyring).await?;
            let created =
                manage::create(&client, keyring.current(), &SystemResolver, &request).await?;
            print_json(&created)?;
            if let Some(warning) = elsewhere {
                eprintln!("webhookd: warning: {warning}");
            }
            Ok(())
        }
        WebhooksCommand::List { org } => {
            let client = connected(url).await?;
            print_json(&manage::list(&client, org).await?)
        }
        WebhooksCommand::Revoke { webhook_id } => {
            let mut client = connected(url).await?;
            let revoked = manage::revoke(&mut client, webhook_id).await?;
            if revoked.newly_revoked {
                println!(
                    "webhook {webhook_id} revoked; {} pending deliveries cancelled",
                    revoked.cancelled
                );
            } else {
                println!("webhook {webhook_id} was already revoked");
            }
            Ok(())
        }
        WebhooksCommand::Enable { webhook_id } => {
            let client = connected(url).await?;
            match manage::enable(&client, webhook_id).await? {
                Enabled::Enabled => println!(
                    "webhook {webhook_id} enabled; its failed deliveries stay failed until \
                     `webhookd recover --webhook {webhook_id} --since TIME`"
                ),
                Enabled::AlreadyActive => {
                    println!("webhook {webhook_id} is already active; nothing changed")
                }
            }
            Ok(())
        }
    }
}

/// `keys rotate`: the count on stdout; secrets that did not open make it end
/// with one line on stderr and exit status 1 (the rest was still rotated).
async fn rotate_keys(url: &str, secrets: &SecretArgs) -> Result<()> {
    use crate::keys::rotate::{describe_unopenable, KeyRotation, BATCH_DEFAULT};
    let keyring = secrets.keyring()?;
    let client = connected(url).await?;
    let outcome = KeyRotation::new(&keyring, BATCH_DEFAULT)
        .run(&client)
        .await?;
    match describe_unopenable(&outcome) {
        None => {
            println!("{{\"reencrypted\": {}}}", outcome.reencrypted);
            Ok(())
        }
        Some(problem) => {
            println!(
                "{{\"reencrypted\": {}, \"unopenable\": {}}}",
                outcome.reencrypted,
                outcome.unopenable_total()
            );
            Err(Error::other(problem))
        }
    }
}

/// A connection to a database whose schema this binary's statements work
/// on: current, or newer (migrations are expand-only), with a warning.
async fn connected(url: &str) -> Result<tokio_postgres::Client> {
    let client = db::connect_single(url).await?;
    let state = db::check_schema(&client).await?;
    if state != db::SchemaState::Current {
        tracing::warn!("{}", state.describe());
    }
    Ok(client)
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|err| Error::other(err.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `--signature-scheme`: a bad name is a usage error naming the accepted ones.
fn signature_scheme(name: &str) -> std::result::Result<SignatureScheme, String> {
    SignatureScheme::parse(name).map_err(|err| err.one_line())
}
