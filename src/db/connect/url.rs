//! Taking libpq's TLS parameters (`sslmode`, `sslrootcert`) out of a
//! connection URL, in both URL and key=value form, so the driver parses the
//! rest; parameters webhookd does not support are named in the error.

use crate::error::{Error, Result};

/// A URL with its TLS parameters taken out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SplitUrl {
    /// What the driver parses.
    pub(super) rest: String,
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
}

/// Parameters libpq knows that webhookd does not support; named in the error
/// rather than reported by the driver as unknown.
const UNSUPPORTED: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

pub(super) fn split_ssl_parameters(url: &str, setting: &str) -> Result<SplitUrl> {
    let url = url.trim();
    let pairs = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        None
    } else {
        Some(())
    };
    let mut sslmode = None;
    let mut sslrootcert = None;
    let mut take = |key: &str, value: String| -> Result<bool> {
        match key {
            "sslmode" => sslmode = Some(value),
            "sslrootcert" => sslrootcert = Some(value),
            key if UNSUPPORTED.contains(&key) => {
                return Err(Error::config(format!(
                    "{setting}: {key} is not supported (client certificates and revocation \
                     lists): authenticate with a password over TLS instead"
                )))
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = match pairs {
        None => split_url_query(url, &mut take)?,
        Some(()) => split_key_values(url, setting, &mut take)?,
    };
    Ok(SplitUrl {
        rest,
        sslmode,
        sslrootcert,
    })
}

/// `postgres://…?a=b&sslmode=x`: removes the parameters `take` claims.
fn split_url_query(
    url: &str,
    take: &mut impl FnMut(&str, String) -> Result<bool>,
) -> Result<String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&percent_decode(key), percent_decode(value))? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

/// `host=h sslmode='verify-full'`: removes the parameters `take` claims and
/// writes the rest back, quoted.
fn split_key_values(
    text: &str,
    setting: &str,
    take: &mut impl FnMut(&str, String) -> Result<bool>,
) -> Result<String> {
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::config(format!(
                "{setting} is not a valid PostgreSQL URL: expected key=value at character {}",
                text.chars().count() - chars.clone().count()
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = read_value(&mut chars, &key, setting)?;
        if !take(&key, value.clone())? {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok(kept.join(" "))
}

fn read_value(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    key: &str,
    setting: &str,
) -> Result<String> {
    if chars.next_if_eq(&'\'').is_none() {
        return Ok(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect());
    }
    let mut value = String::new();
    loop {
        match chars.next() {
            Some('\'') => return Ok(value),
            Some('\\') => value.extend(chars.next()),
            Some(c) => value.push(c),
            None => {
                return Err(Error::config(format!(
                    "{setting} is not a valid PostgreSQL URL: unterminated quote in {key}"
                )))
            }
        }
    }
}

/// `%2F` → `/`; anything malformed is kept as typed.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> SplitUrl {
        split_ssl_parameters(url, "DATABASE_URL").unwrap()
    }

    #[test]
    fn ssl_parameters_come_out_of_a_url_and_the_rest_stays() {
        let s = split(
            "postgres://app:pw@db1:5432,db2:5433/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&target_session_attrs=read-write",
        );
        assert_eq!(
            s.rest,
            "postgres://app:pw@db1:5432,db2:5433/app?target_session_attrs=read-write"
        );
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            split("postgres://h/db?sslmode=require").rest,
            "postgres://h/db"
        );
        assert_eq!(split("postgres://h/db").sslmode, None);
    }

    #[test]
    fn ssl_parameters_come_out_of_key_value_form_with_quotes() {
        let s = split(
            "host=db user=app sslmode = verify-ca sslrootcert='/etc/my ca.pem' password='a\\'b'",
        );
        assert_eq!(s.rest, "host='db' user='app' password='a\\'b'");
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/my ca.pem"));
        let config: tokio_postgres::Config = s.rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a'b"[..]));
    }
}
