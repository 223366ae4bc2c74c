//! Logging to stderr, as text or JSON lines (the fields are listed in
//! docs/OPERATIONS.md).
//!
//! - Which lines: `RUST_LOG` when it is set, otherwise webhookd's own events
//!   at the command's level and every dependency's at `warn`
//!   ([`default_directives`]): the database driver reports each server
//!   NOTICE at INFO, which is noise in a daemon's log.
//! - Colours only when stderr is a terminal and `NO_COLOR` is unset or empty
//!   ([`colours_wanted`]), so a file or the journal gets plain text.
//! - JSON: one object per line with fixed top-level names ([`json`]); no
//!   source file, line or module path of the build.

pub mod json;

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The target prefix of every event webhookd itself logs (the library's
/// modules and the binary share the crate name).
pub const OWN_TARGET: &str = "webhookd";

/// Installs the global subscriber; a second call is a no-op. `level` is
/// webhookd's own level when `RUST_LOG` is unset.
pub fn init(format: LogFormat, level: LevelFilter) {
    let default = default_directives(level);
    let (filter, problem) = filter_from_env(std::env::var_os("RUST_LOG").as_deref(), &default);
    let colours = colours_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_file(false)
        .with_line_number(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colours).try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json::JsonLines)
            .try_init(),
    };
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The filter used when `RUST_LOG` is unset: webhookd's events at `level`,
/// every other crate's at `warn` (or at `level` when that is quieter still).
pub fn default_directives(level: LevelFilter) -> String {
    if level <= LevelFilter::WARN {
        level.to_string().to_lowercase()
    } else {
        format!("warn,{OWN_TARGET}={}", level.to_string().to_lowercase())
    }
}

/// The filter `RUST_LOG` asks for, or `default` when it is unset or empty;
/// an unusable `RUST_LOG` gives `default` and a line saying why.
fn filter_from_env(rust_log: Option<&OsStr>, default: &str) -> (EnvFilter, Option<String>) {
    let fallback = || EnvFilter::new(default);
    let Some(value) = rust_log.filter(|value| !value.is_empty()) else {
        return (fallback(), None);
    };
    let Some(text) = value.to_str() else {
        return (
            fallback(),
            Some(format!(
                "RUST_LOG is not valid UTF-8; logging with \"{default}\""
            )),
        );
    };
    match EnvFilter::try_new(text) {
        Ok(filter) => (filter, None),
        Err(err) => (
            fallback(),
            Some(format!(
                "RUST_LOG={text:?} is not a valid filter ({err}); logging with \"{default}\""
            )),
        ),
    }
}

/// Whether text lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` holds a value (an empty one does not count, as no-color.org says).
pub fn colours_wanted(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours_wanted(true, None));
        assert!(colours_wanted(true, Some(OsStr::new(""))));
        assert!(!colours_wanted(true, Some(OsStr::new("1"))));
        assert!(!colours_wanted(true, Some(OsStr::new("false"))));
        assert!(!colours_wanted(false, None));
        assert!(!colours_wanted(false, Some(OsStr::new(""))));
    }

    #[test]
    fn dependencies_stay_at_warn_unless_the_command_is_quieter() {
        assert_eq!(default_directives(LevelFilter::INFO), "warn,webhookd=info");
        assert_eq!(
            default_directives(LevelFilter::DEBUG),
            "warn,webhookd=debug"
        );
        assert_eq!(default_directives(LevelFilter::WARN), "warn");
        assert_eq!(default_directives(LevelFilter::ERROR), "error");
    }

    #[test]
    fn an_unusable_rust_log_falls_back_with_a_reason() {
        let (_, problem) = filter_from_env(None, "warn");
        assert_eq!(problem, None);
        let (_, problem) = filter_from_env(Some(OsStr::new("")), "warn");
        assert_eq!(problem, None);
        let (_, problem) = filter_from_env(Some(OsStr::new("tokio_postgres=info")), "warn");
        assert_eq!(problem, None);
        let (_, problem) = filter_from_env(Some(OsStr::new("webhookd=loud")), "warn");
        let problem = problem.expect("an invalid level is reported");
        assert!(problem.contains("RUST_LOG=\"webhookd=loud\""), "{problem}");
        assert!(problem.contains("logging with \"warn\""), "{problem}");
    }
}
