//! `webhookd`: parse, run, map errors to exit codes (0 ok, 2 user error, 1 other).

use std::process::ExitCode;

use clap::Parser;
use webhookd::cli::{self, Cli, Command};
use webhookd::telemetry;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) || matches!(
                err.kind(),
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = err.print();
                return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // clap's first line names the problem; the usage lines add nothing.
            let text = err.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("webhookd: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let default_level = match cli.command {
        Command::Run(_) => "info",
        // The demo tells its own story on stdout; the daemon's logs would drown it.
        Command::Demo => "error",
        _ => "warn",
    };
    telemetry::init(cli.log_format, default_level);
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
            eprintln!("webhookd: {}", err.one_line());
            ExitCode::from(if err.is_user_error() { 2 } else { 1 })
        }
    }
}
