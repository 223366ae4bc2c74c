//! `webhookd`: parse, run, map errors to exit codes (0 ok, 2 user error, 1 other).

use std::process::ExitCode;

use tracing::level_filters::LevelFilter;
use webhookd::cli::{self, Cli, Command};
use webhookd::telemetry::{self, LogFormat};

/// With `--features heap-profile`, every allocation is recorded.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // Writes dhat-heap-<pid>.json when main returns (after a graceful stop).
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::builder()
        .file_name(format!("dhat-heap-{}.json", std::process::id()))
        .build();
    let cli = match Cli::try_parse_args() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let default_level = match cli.command {
        Command::Run(_) => LevelFilter::INFO,
        // The demo tells its own story on stdout; the daemon's logs would drown it.
        Command::Demo => LevelFilter::ERROR,
        _ => LevelFilter::WARN,
    };
    let cli_log_format = cli.log_format;
    telemetry::init(cli_log_format, default_level);
    webhookd::daemon::memory::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("webhookd: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.is_user_error() { 2 } else { 1 };
            match cli_log_format {
                LogFormat::Text => eprintln!("webhookd: {}", err.one_line()),
                LogFormat::Json => {
                    eprintln!("{}", telemetry::json::exit_line(&err.one_line(), code))
                }
            }
            ExitCode::from(code)
        }
    }
}

/// Help and version go to stdout with exit 0; anything else is one line on
/// stderr with exit 2, not clap's usage block.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("webhookd: a subcommand is required; see --help for the list");
            ExitCode::from(2)
        }
        _ => {
            // clap's text: the problem, sometimes continued on indented lines
            // (the missing arguments), then a blank line and the usage.
            let text = err.render().to_string();
            let problem = text.split("\n\n").next().unwrap_or("invalid arguments");
            let line = problem.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("webhookd: {}", line.trim_start_matches("error: "));
            ExitCode::from(2)
        }
    }
}
