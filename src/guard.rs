//! Outbound safety: which webhook URLs and resolved addresses webhookd will
//! talk to (docs/CONTRACT.md §4; why: docs/ARCHITECTURE.md, outbound safety). Pure.
//!
//! Customers type webhook URLs; without this check a URL could aim webhookd at
//! the cloud metadata service or an internal admin port. The sender checks
//! every resolved address at send time and connects to the address it
//! checked, so a DNS answer cannot change between check and connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hyper::Uri;

/// Longest URL accepted; receivers and logs need no more.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL was refused, in words for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRejected(pub String);

impl std::fmt::Display for UrlRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlRejected {}

impl From<&str> for UrlRejected {
    fn from(reason: &str) -> Self {
        UrlRejected(reason.to_string())
    }
}

/// A webhook URL that passed the syntactic checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// The URL as given.
    pub uri: Uri,
    /// `https` (or `http` when private targets are allowed).
    pub https: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Explicit or default port.
    pub port: u16,
}

impl TargetUrl {
    /// Parses and checks a webhook URL. `allow_private` also admits `http://`.
    pub fn parse(url: &str, allow_private: bool) -> Result<TargetUrl, UrlRejected> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlRejected(format!(
                "URL is longer than {MAX_URL_LEN} characters"
            )));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("URL must not contain whitespace or control characters".into());
        }
        let uri: Uri = url
            .parse()
            .map_err(|_| UrlRejected(format!("\"{}\" is not an absolute URL", truncate(url))))?;
        let https = scheme_is_https(&uri, url, allow_private)?;
        let authority = uri
            .authority()
            .ok_or(UrlRejected("URL has no host".into()))?;
        if authority.as_str().contains('@') {
            return Err("URL must not contain credentials (user:password@)".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err("URL has no host".into());
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err("URL port 0 is not valid".into());
        }
        let host = host.to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            if !allow_private {
                if let Some(kind) = blocked_kind(ip) {
                    return Err(UrlRejected(format!(
                        "URL points at a {kind} address ({ip}), which is blocked"
                    )));
                }
            }
        }
        Ok(TargetUrl {
            uri,
            https,
            host,
            port,
        })
    }
}

/// Whether the URL's scheme is `https` (else `http`, allowed only with
/// `allow_private`); any other scheme, or none, is rejected.
fn scheme_is_https(uri: &Uri, url: &str, allow_private: bool) -> Result<bool, UrlRejected> {
    match uri.scheme_str() {
        Some("https") => Ok(true),
        Some("http") if allow_private => Ok(false),
        Some("http") => Err(
            "URL must use https:// (http:// is allowed only with --allow-private-targets)".into(),
        ),
        Some(other) => Err(UrlRejected(format!(
            "URL scheme \"{other}\" is not supported: use https://"
        ))),
        None => Err(UrlRejected(format!(
            "\"{}\" is not an absolute URL",
            truncate(url)
        ))),
    }
}

impl TargetUrl {
    /// The path and query to put on the request line.
    pub fn path_and_query(&self) -> &str {
        self.uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default_port = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(100).collect()
}

/// Why an address is not public, or `None` when it is.
pub fn blocked_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, _, _] = ip.octets();
    match (a, b) {
        (0, _) => Some("unspecified"),
        (127, _) => Some("loopback"),
        (10, _) => Some("private"),
        (172, 16..=31) => Some("private"),
        (192, 168) => Some("private"),
        (100, 64..=127) => Some("shared (carrier-grade NAT)"),
        (169, 254) => Some("link-local"),
        (192, 0) if ip.octets()[2] == 0 => Some("reserved (IETF protocol)"),
        (198, 18..=19) => Some("reserved (benchmarking)"),
        (224..=239, _) => Some("multicast"),
        (240..=255, _) => Some("reserved"),
        _ => None,
    }
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64
    // (64:ff9b::/96) and 6to4 (2002::/16) all reach an IPv4 address: judge that.
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    // The deprecated IPv4-compatible form (::a.b.c.d) has no legitimate use.
    if segments[..6] == [0; 6] {
        return Some("IPv4-compatible");
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[0] == 0x2002 {
        let embedded = if segments[0] == 0x2002 {
            Ipv4Addr::new(
                (segments[1] >> 8) as u8,
                segments[1] as u8,
                (segments[2] >> 8) as u8,
                segments[2] as u8,
            )
        } else {
            Ipv4Addr::new(
                (segments[6] >> 8) as u8,
                segments[6] as u8,
                (segments[7] >> 8) as u8,
                segments[7] as u8,
            )
        };
        return blocked_v4(embedded);
    }
    match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Some("unique-local"),
        s if s & 0xffc0 == 0xfe80 => Some("link-local"),
        s if s & 0xffc0 == 0xfec0 => Some("site-local"),
        s if s & 0xff00 == 0xff00 => Some("multicast"),
        // Teredo tunnels to arbitrary IPv4 hosts; documentation prefix.
        0x2001 if segments[1] == 0 => Some("Teredo"),
        0x2001 if segments[1] == 0x0db8 => Some("documentation"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(ip: &str) -> bool {
        blocked_kind(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_ipv4_ranges_are_blocked() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked(ip), "{ip} must be blocked");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "192.169.0.1",
        ] {
            assert!(!blocked(ip), "{ip} is public");
        }
    }

    #[test]
    fn ipv6_forms_of_blocked_addresses_are_blocked() {
        for ip in [
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001::1",
        ] {
            assert!(blocked(ip), "{ip} must be blocked");
        }
        assert!(!blocked("2606:4700:4700::1111"));
        assert!(!blocked("64:ff9b::808:808"));
    }

    #[test]
    fn urls_must_be_https_without_credentials() {
        assert!(TargetUrl::parse("https://example.com/hook", false).is_ok());
        assert!(TargetUrl::parse("http://example.com/hook", false).is_err());
        assert!(TargetUrl::parse("http://example.com/hook", true).is_ok());
        assert!(TargetUrl::parse("ftp://example.com/", true).is_err());
        assert!(TargetUrl::parse("example.com/hook", false).is_err());
        assert!(TargetUrl::parse("https://user:pw@example.com/", false).is_err());
        assert!(TargetUrl::parse("https://exa mple.com/", false).is_err());
        assert!(TargetUrl::parse("https://10.0.0.7/hook", false).is_err());
        assert!(TargetUrl::parse("https://[::1]:8443/hook", false).is_err());
        assert!(TargetUrl::parse("https://[::1]:8443/hook", true).is_ok());
    }

    #[test]
    fn host_header_keeps_non_default_ports_and_brackets() {
        let url = TargetUrl::parse("http://[::1]:8080/x?y=1", true).unwrap();
        assert_eq!(url.host_header(), "[::1]:8080");
        assert_eq!(url.path_and_query(), "/x?y=1");
        let url = TargetUrl::parse("https://Example.com/", false).unwrap();
        assert_eq!(url.host_header(), "example.com");
    }
}
