//! A throwaway certificate authority and a receiver certificate for each of
//! a list of IP addresses, so the daemon can reach an HTTPS receiver on many
//! loopback addresses and verify it (`--extra-ca-file`). One certificate per
//! address, as each receiver host of a real deployment has its own: a single
//! certificate naming thousands of addresses would make every handshake carry
//! and check all of them.

use std::net::IpAddr;
use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// The receiver's TLS side and where the CA certificate was written.
pub struct ReceiverPki {
    /// One acceptor per address, in the order given.
    pub acceptors: Vec<tokio_native_tls::TlsAcceptor>,
    /// The CA certificate (PEM), for `--extra-ca-file`.
    pub ca_file: PathBuf,
}

/// A fresh CA and, for each of `addresses`, a certificate naming that
/// address; the CA's PEM goes to a file in the temporary directory.
pub fn receiver_pki(addresses: &[IpAddr]) -> Result<ReceiverPki, Box<dyn std::error::Error>> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "webhookd bench CA");
    let ca = ca_params.self_signed(&ca_key)?;

    // One key for all: only the names differ between the receiver hosts.
    let server_key = KeyPair::generate()?;
    let key_pem = server_key.serialize_pem();
    let mut acceptors = Vec::with_capacity(addresses.len());
    for address in addresses {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::IpAddress(*address)];
        params
            .distinguished_name
            .push(DnType::CommonName, address.to_string());
        let certificate = params.signed_by(&server_key, &ca, &ca_key)?;
        let identity =
            native_tls::Identity::from_pkcs8(certificate.pem().as_bytes(), key_pem.as_bytes())?;
        let acceptor = native_tls::TlsAcceptor::new(identity)?;
        acceptors.push(tokio_native_tls::TlsAcceptor::from(acceptor));
    }

    let ca_file =
        std::env::temp_dir().join(format!("webhookd-bench-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem())?;
    Ok(ReceiverPki { acceptors, ca_file })
}
