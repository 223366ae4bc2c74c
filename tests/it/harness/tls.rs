//! A test certificate authority and a server certificate for `localhost`.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and a server identity it signed.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// Server acceptor presenting the signed certificate.
    pub acceptor: tokio_native_tls::TlsAcceptor,
}

/// Makes a fresh CA and a certificate for `localhost` (only: an IP-literal
/// URL gets a mismatch, which the TLS tests rely on).
pub fn test_pki() -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "webhookd test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let identity = native_tls::Identity::from_pkcs8(
        server.pem().as_bytes(),
        server_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        acceptor: tokio_native_tls::TlsAcceptor::from(acceptor),
    }
}
