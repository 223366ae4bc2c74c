//! Sessions of the operator page: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui`, and on the server, in memory,
//! the id's SHA-256 digest with its expiry. The token itself never leaves
//! the login form; a restart or another replica simply asks to sign in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, COOKIE};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The cookie's name.
const COOKIE_NAME: &str = "webhookd_ui";
/// How long a session lasts after signing in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; signing in beyond it ends the one closest to expiry.
const MAX_SESSIONS: usize = 1024;

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    // Keyed by digest, so a lookup's timing says nothing about live ids.
    live: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    /// Starts a session; returns its id for the cookie.
    pub fn start(&self) -> String {
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let id = hex::encode(id);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, expiry| *expiry > now);
        if live.len() >= MAX_SESSIONS {
            let soonest = live.iter().min_by_key(|(_, expiry)| **expiry);
            if let Some(key) = soonest.map(|(key, _)| *key) {
                live.remove(&key);
            }
        }
        live.insert(digest(&id), now + SESSION_LIFETIME);
        id
    }

    /// Whether the request carries the cookie of a live session.
    pub fn is_live(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&digest(&id))
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Ends the request's session, if any.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove(&digest(&id));
        }
    }
}

/// The `Set-Cookie` value that starts a session. No `Secure`: the admin
/// address serves plain HTTP (docs/CONTRACT.md §8), and a browser would
/// never send a `Secure` cookie back over it; keep the admin address on
/// loopback or a private network, or behind a TLS proxy.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE_NAME}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends it in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session id of the request's cookie.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_started_session_is_live_until_it_ends() {
        let sessions = Sessions::default();
        let id = sessions.start();
        assert_eq!(id.len(), 64);
        let headers = with_cookie(&format!("other=1; {COOKIE_NAME}={id}"));
        assert!(sessions.is_live(&headers));
        assert!(!sessions.is_live(&with_cookie(&format!("{COOKIE_NAME}=x{id}"))));
        assert!(!sessions.is_live(&HeaderMap::new()));
        sessions.end(&headers);
        assert!(!sessions.is_live(&headers));
    }

    #[test]
    fn the_cookie_is_scoped_and_hidden_from_scripts() {
        let cookie = set_cookie("abc");
        for part in ["Path=/ui", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
