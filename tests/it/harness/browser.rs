//! A headless Chromium driven through chromedriver's WebDriver protocol
//! (plain JSON over HTTP to a chromedriver this harness starts on a
//! 127.0.0.1 port): open a URL, find elements by CSS selector, type, click,
//! read the page source and take screenshots. Only what the operator page's
//! test needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::{free_local_address, skip_unless_ci, wait_until};

/// The key WebDriver names a found element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; quit it with [`Browser::quit`].
pub struct Browser {
    _driver: Child,
    address: SocketAddr,
    session: String,
}

/// Where `chromium` and `chromedriver` are, when both are installed.
fn installed() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    };
    Some((
        find(&["chromium", "chromium-browser"])?,
        find(&["chromedriver"])?,
    ))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (a loud skip, a
    /// failure in CI) when they are not installed.
    pub async fn start(what: &str) -> Option<Browser> {
        let Some((chromium, chromedriver)) = installed() else {
            skip_unless_ci(
                what,
                "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let address = free_local_address();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={}", address.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        wait_until("chromedriver answers", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(address).await.is_ok()
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"],
            },
        }}});
        let created = call(address, "POST", "/session", &capabilities).await;
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        Some(Browser {
            _driver: driver,
            address,
            session,
        })
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(self.address, method, &path, &body).await
    }

    /// Opens `url` and waits for it to load.
    pub async fn open(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        let url = self.command("GET", "/url", Value::Null).await;
        url.as_str().unwrap_or_default().to_string()
    }

    /// Every element matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Vec<String> {
        let body = json!({ "using": "css selector", "value": selector });
        let found = self.command("POST", "/elements", body).await;
        let found = found.as_array().cloned().unwrap_or_default();
        found
            .iter()
            .filter_map(|element| element[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// The one element matching `selector`; panics when there is none.
    pub async fn find(&self, selector: &str) -> String {
        if let Some(element) = self.find_all(selector).await.into_iter().next() {
            return element;
        }
        let (url, source) = (self.url().await, self.source().await);
        panic!("no element matches {selector} on {url}:\n{source}")
    }

    /// The rendered text of the element matching `selector`.
    pub async fn text(&self, selector: &str) -> String {
        let element = self.find(selector).await;
        let path = format!("/element/{element}/text");
        let text = self.command("GET", &path, Value::Null).await;
        text.as_str().unwrap_or_default().to_string()
    }

    /// Types `text` into the element matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector).await;
        let path = format!("/element/{element}/value");
        self.command("POST", &path, json!({ "text": text })).await;
    }

    /// Waits until an element matches `selector` (after a click that loads
    /// a page: the click may return before the new page is there).
    pub async fn wait_for(&self, selector: &str) {
        let what = format!("an element matching {selector}");
        wait_until(&what, Duration::from_secs(30), || async {
            !self.find_all(selector).await.is_empty()
        })
        .await;
    }

    /// Clicks the element matching `selector`; see [`Browser::wait_for`].
    pub async fn click(&self, selector: &str) {
        let element = self.find(selector).await;
        let path = format!("/element/{element}/click");
        self.command("POST", &path, json!({})).await;
    }

    /// The page's HTML source.
    pub async fn source(&self) -> String {
        let source = self.command("GET", "/source", Value::Null).await;
        source.as_str().unwrap_or_default().to_string()
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self.command("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("a base64 screenshot"))
            .expect("valid base64");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn quit(self) {
        drop(self);
    }
}

impl Drop for Browser {
    /// Ends the session even when a test panics, so no Chromium outlives
    /// it; chromedriver itself is killed with its handle.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&self.address, Duration::from_secs(2))
        else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.session, self.address
        );
        let mut answer = [0u8; 512];
        if stream.write_all(request.as_bytes()).is_ok() {
            // The answer comes once Chromium has exited.
            let _ = stream.read(&mut answer);
        }
    }
}

/// One WebDriver command; returns its `value`, panicking on a WebDriver error.
async fn call(address: SocketAddr, method: &str, path: &str, body: &Value) -> Value {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    // A deadline, not a wait: a page load on a loaded 2-core machine.
    let payload = tokio::time::timeout(
        Duration::from_secs(90),
        request(address, method, path, &body),
    )
    .await
    .unwrap_or_else(|_| panic!("WebDriver {method} {path} did not answer within 90s"));
    let answer: Value = serde_json::from_slice(&payload).unwrap_or_else(|err| {
        let text = String::from_utf8_lossy(&payload);
        panic!("WebDriver {method} {path}: {err}: {text}")
    });
    if answer["value"]["error"].is_string() {
        panic!("WebDriver {method} {path} failed: {}", answer["value"]);
    }
    answer["value"].clone()
}

/// One HTTP/1.1 request to chromedriver; returns the body. chromedriver
/// answers `Connection: close` but leaves the socket open, so the body is
/// read up to its `Content-Length` rather than to the end of the stream.
async fn request(address: SocketAddr, method: &str, path: &str, body: &str) -> Vec<u8> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload).await.unwrap();
    payload
}

/// Where screenshots go: `docs/ui/` when `WEBHOOKD_UPDATE_SCREENSHOTS=1`
/// (to commit them), otherwise a directory under the system's temp dir.
pub fn screenshot_dir() -> PathBuf {
    if std::env::var("WEBHOOKD_UPDATE_SCREENSHOTS").is_ok_and(|value| value == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ui")
    } else {
        std::env::temp_dir().join("webhookd-ui-screenshots")
    }
}
