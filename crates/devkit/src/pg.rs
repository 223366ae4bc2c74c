//! The kit's own PostgreSQL connections: administrative sessions on a test
//! server (creating and dropping databases, probing a throwaway cluster), and
//! the URL of another database on the same server.
//!
//! These connect to scratch servers only, so TLS is taken when the server
//! offers it (`sslmode` from the URL, `prefer` by default) without checking
//! the certificate; the product's own connection rules live in its `db`
//! module and are what the tests check.

use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::{Client, Config};

/// One session on `url`, driven on a task of its own, named
/// `application_name` (tests tell the daemon's sessions by their name).
pub async fn connect_as(
    url: &str,
    application_name: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config: Config = url.parse()?;
    config.application_name(application_name);
    let tls = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .expect("a TLS connector with the system's defaults");
    let (client, connection) = config.connect(MakeTlsConnector::new(tls)).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// One session on `url` named `webhookd-devkit`.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    connect_as(url, "webhookd-devkit").await
}

/// The same server URL naming database `name` instead (URL or key=value form).
pub fn url_with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={name}");
    };
    let after = scheme_end + 3;
    let query = url[after..].find('?').map_or(url.len(), |i| after + i);
    let path = url[after..query].find('/').map_or(query, |i| after + i);
    format!("{}/{name}{}", &url[..path], &url[query..])
}

#[cfg(test)]
mod tests {
    use super::url_with_database;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            url_with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(url_with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(url_with_database("host=h", "x"), "host=h dbname=x");
    }
}
