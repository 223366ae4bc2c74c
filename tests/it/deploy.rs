//! examples/deploy/ stays complete and valid: webhookd.env has every setting
//! `webhookd run` reads, each commented one with its real default, and
//! webhookd.service passes `systemd-analyze verify` and keeps its sandbox
//! (`systemd-analyze security`). The systemd checks need systemd-analyze
//! (Debian: the systemd package, which .ci/run installs); without it they are
//! skipped loudly, and fail in CI.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::level_filters::LevelFilter;
use webhookd::config::parse_duration;

use crate::harness::process::Webhookd;

const ENV_FILE: &str = include_str!("../../examples/deploy/webhookd.env");
const UNIT: &str = include_str!("../../examples/deploy/webhookd.service");

/// Variables read from the environment directly rather than through a flag.
const NOT_FLAGS: [&str; 5] = [
    "WEBHOOKD_SECRET_KEY",
    "WEBHOOKD_SECRET_KEY_PREVIOUS",
    "WEBHOOKD_ADMIN_TOKEN",
    "RUST_LOG",
    "NO_COLOR",
];

/// Highest exposure `systemd-analyze security` may give the unit, in tenths
/// (its own scale is 0.0 to 10.0; the unit scores 1.4 with systemd 252).
const EXPOSURE_LIMIT_TENTHS: u32 = 20;

/// One variable of the sample file: its value, and whether it is commented out.
#[derive(Debug)]
struct Sample {
    value: String,
    commented: bool,
}

fn env_file_variables() -> BTreeMap<String, Sample> {
    let line = regex_lite::Regex::new(r"^(#)?([A-Z][A-Z0-9_]*)=(.*)$").unwrap();
    let mut variables = BTreeMap::new();
    for captures in ENV_FILE.lines().filter_map(|text| line.captures(text)) {
        let name = captures[2].to_string();
        let sample = Sample {
            value: captures[3].to_string(),
            commented: captures.get(1).is_some(),
        };
        assert!(
            variables.insert(name.clone(), sample).is_none(),
            "{name} is twice in webhookd.env"
        );
    }
    variables
}

/// Every variable `webhookd run --help` names, with its default if it has one.
async fn run_settings() -> BTreeMap<String, Option<String>> {
    let help = Webhookd::new("postgres://unused@127.0.0.1/unused", &["run", "--help"])
        .output()
        .await;
    let help = help.succeeded();
    let env = regex_lite::Regex::new(r"\[env: ([A-Z0-9_]+)").unwrap();
    let default = regex_lite::Regex::new(r"\[default: ([^\]]*)\]").unwrap();
    // One block per option: from its `--flag` line to the next one.
    let mut settings = BTreeMap::new();
    for block in help.split("\n      --").skip(1) {
        if let Some(name) = env.captures(block) {
            let value = default.captures(block).map(|found| found[1].to_string());
            settings.insert(name[1].to_string(), value);
        }
    }
    assert!(
        settings.len() >= 15,
        "the help lists fewer settings than expected: {settings:?}\n{help}"
    );
    settings
}

#[tokio::test]
async fn the_sample_environment_file_names_every_setting_with_its_default() {
    let samples = env_file_variables();
    let settings = run_settings().await;
    for (name, default) in &settings {
        let sample = samples
            .get(name)
            .unwrap_or_else(|| panic!("{name} (webhookd run --help) is not in webhookd.env"));
        if let (true, Some(default)) = (sample.commented, default) {
            assert_eq!(
                &sample.value, default,
                "the commented {name} in webhookd.env should show the default"
            );
        }
    }
    for name in NOT_FLAGS {
        assert!(samples.contains_key(name), "{name} is not in webhookd.env");
    }
    for name in samples.keys() {
        assert!(
            settings.contains_key(name) || NOT_FLAGS.contains(&name.as_str()),
            "webhookd.env sets {name}, which webhookd does not read"
        );
    }
    assert_eq!(
        samples["RUST_LOG"].value,
        webhookd::telemetry::default_directives(LevelFilter::INFO),
        "the RUST_LOG line of webhookd.env should show the default filter"
    );
}

/// The value of the unit's `key=` line.
fn unit_setting(key: &str) -> &'static str {
    UNIT.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("webhookd.service has no {key}="))
}

#[test]
fn the_unit_waits_longer_than_the_shutdown_grace_before_killing() {
    let settings = env_file_variables();
    let grace = parse_duration(&settings["WEBHOOKD_SHUTDOWN_GRACE"].value).unwrap();
    let stop = parse_duration(unit_setting("TimeoutStopSec")).unwrap();
    assert!(
        stop >= grace + std::time::Duration::from_secs(10),
        "{stop:?}"
    );
    assert_eq!(unit_setting("ExecStart"), "/usr/local/bin/webhookd run");
    assert_eq!(
        unit_setting("EnvironmentFile"),
        "/etc/webhookd/webhookd.env"
    );
    assert_eq!(unit_setting("DynamicUser"), "yes");
}

/// systemd's major version when systemd-analyze is installed; otherwise
/// skips loudly, or fails in CI.
fn systemd_analyze_version() -> Option<u32> {
    let found = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success());
    let Some(output) = found else {
        crate::harness::skip_unless_ci(
            "checking examples/deploy/webhookd.service",
            "systemd-analyze is not installed (Debian: `apt-get install -y systemd`; .ci/run does this)",
        );
        return None;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .split_whitespace()
        .nth(1)
        .and_then(|word| word.parse().ok());
    Some(version.unwrap_or_else(|| panic!("cannot read the version of systemd-analyze: {text}")))
}

/// Runs systemd-analyze; returns (success, its output lines about the unit).
fn analyze(args: &[&str], unit: &Path) -> (bool, Vec<String>) {
    let output = std::process::Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Other units it loads may have complaints of their own; ours name the file.
    let ours = text
        .lines()
        .filter(|line| line.contains("webhookd"))
        .map(str::to_string)
        .collect();
    (output.status.success(), ours)
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_keeps_its_sandbox() {
    let Some(version) = systemd_analyze_version() else {
        return;
    };
    // verify checks that ExecStart's binary exists: point it at the one built.
    let dir = std::env::temp_dir().join(format!("webhookd-deploy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("webhookd.service");
    let text = UNIT.replace("/usr/local/bin/webhookd", env!("CARGO_BIN_EXE_webhookd"));
    std::fs::write(&unit, text).unwrap();

    let (verified, complaints) = analyze(&["verify"], &unit);
    let security = (version >= 250).then(|| {
        let threshold = format!("--threshold={EXPOSURE_LIMIT_TENTHS}");
        analyze(&["security", "--offline=true", &threshold], &unit)
    });
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        verified && complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
    match security {
        Some((within, lines)) => assert!(
            within,
            "the unit's exposure rose above {}.{}: {:#?}",
            EXPOSURE_LIMIT_TENTHS / 10,
            EXPOSURE_LIMIT_TENTHS % 10,
            lines
        ),
        None => eprintln!(
            "\n!!!!! SKIPPED systemd-analyze security on webhookd.service: systemd {version} \
             has no --offline (250 and later) !!!!!\n"
        ),
    }
}
