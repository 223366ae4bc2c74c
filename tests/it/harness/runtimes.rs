//! The sample programs under examples/ (receivers and producers, one per
//! language) and asking their tools whether they run here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// A language of the samples.
#[derive(Debug, Clone, Copy)]
pub enum Lang {
    Node,
    Python,
    Go,
    Php,
}

impl Lang {
    /// The sample's directory: `examples/{kind}/{language}`.
    pub fn sample_dir(self, kind: &str) -> PathBuf {
        let name = match self {
            Lang::Node => "node",
            Lang::Python => "python",
            Lang::Go => "go",
            Lang::Php => "php",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(kind)
            .join(name)
    }
}

/// Runs `program args` in `dir` within `limit`; its stdout, or why it failed.
pub async fn probe(
    program: &Path,
    args: &[&str],
    dir: &Path,
    limit: Duration,
) -> Result<String, String> {
    let what = format!("`{} {}`", program.display(), args.join(" "));
    let run = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Err(_) => Err(format!("{what} did not answer within {limit:?}")),
        Ok(Err(error)) => Err(format!("{what} failed: {error}")),
        Ok(Ok(output)) if !output.status.success() => Err(format!(
            "{what} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(Ok(output)) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
    }
}
