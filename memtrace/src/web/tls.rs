//! `tls_server_config` → a rustls server configuration (ring provider, as reqwest uses), with
//! Go's five client-authentication policies mapped onto rustls' client verifiers.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, SignatureScheme,
};

use super::config::{ClientAuthType, TlsServerConfig, TlsVersion, WebConfigError};

/// Builds the server configuration; errors name the web config file, the key and the file read.
pub fn server_config(
    path: &Path,
    tls: &TlsServerConfig,
) -> Result<Arc<rustls::ServerConfig>, WebConfigError> {
    let invalid = |key: &str, reason: String| WebConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_owned(),
        reason,
    };
    let file_err = |key: &'static str, file: &Path, reason: String| WebConfigError::File {
        path: path.to_path_buf(),
        key,
        file: file.to_path_buf(),
        reason,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &tls.cipher_suites {
        provider.cipher_suites = cipher_suites(&provider, names)
            .map_err(|reason| invalid("tls_server_config.cipher_suites", reason))?;
    }
    if let Some(names) = &tls.curve_preferences {
        provider.kx_groups = curves(&provider, names)
            .map_err(|reason| invalid("tls_server_config.curve_preferences", reason))?;
    }
    let provider = Arc::new(provider);

    let certs = pem_source(
        path,
        &tls.cert,
        &tls.cert_file,
        "cert_file",
        &file_err,
        |bytes| {
            CertificateDer::pem_slice_iter(bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("not PEM certificates: {e}"))
                .and_then(|certs| {
                    if certs.is_empty() {
                        Err("no certificate in it".to_owned())
                    } else {
                        Ok(certs)
                    }
                })
        },
    )?;
    let key = pem_source(
        path,
        &tls.key,
        &tls.key_file,
        "key_file",
        &file_err,
        |bytes| {
            PrivateKeyDer::from_pem_slice(bytes).map_err(|e| format!("not a PEM private key: {e}"))
        },
    )?;

    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| {
        *v >= tls.min_version.unwrap_or(TlsVersion::TLS12)
            && *v <= tls.max_version.unwrap_or(TlsVersion::TLS13)
    })
    .map(|(_, v)| v)
    .collect();

    let verifier = client_verifier(path, tls, &provider, &file_err)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| invalid("tls_server_config", e.to_string()))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let cert_key = if tls.cert_file.is_some() {
        "cert_file"
    } else {
        "cert"
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        let reason = format!("the certificate and key do not go together: {e}");
        match &tls.cert_file {
            Some(file) => file_err("cert_file", file, reason),
            None => invalid(cert_key, reason),
        }
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    // HTTP/1.1 only: the server speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Inline PEM text or the named file's, parsed.
fn pem_source<T>(
    path: &Path,
    inline: &Option<String>,
    file: &Option<PathBuf>,
    file_key: &'static str,
    file_err: &impl Fn(&'static str, &Path, String) -> WebConfigError,
    parse: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<T, WebConfigError> {
    match (inline, file) {
        (Some(text), _) => parse(text.as_bytes()).map_err(|reason| WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("tls_server_config.{}", file_key.trim_end_matches("_file")),
            reason,
        }),
        (None, Some(file)) => {
            let bytes = std::fs::read(file).map_err(|e| file_err(file_key, file, e.to_string()))?;
            parse(&bytes).map_err(|reason| file_err(file_key, file, reason))
        }
        (None, None) => Err(WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: "tls_server_config".to_owned(),
            reason: format!("missing {file_key}"),
        }),
    }
}

/// The verifier for `client_auth_type`, `None` when no certificate is asked for.
fn client_verifier(
    path: &Path,
    tls: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
    file_err: &impl Fn(&'static str, &Path, String) -> WebConfigError,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, WebConfigError> {
    let any = |mandatory| -> Arc<dyn ClientCertVerifier> {
        Arc::new(AnyClientCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let roots = || -> Result<Arc<RootCertStore>, WebConfigError> {
        let certs = pem_source(
            path,
            &tls.client_ca,
            &tls.client_ca_file,
            "client_ca_file",
            file_err,
            |bytes| {
                CertificateDer::pem_slice_iter(bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("not PEM certificates: {e}"))
            },
        )?;
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            let reason = "no usable CA certificate in it".to_owned();
            return Err(match &tls.client_ca_file {
                Some(file) => file_err("client_ca_file", file, reason),
                None => WebConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "tls_server_config.client_ca".to_owned(),
                    reason,
                },
            });
        }
        Ok(Arc::new(store))
    };
    let verified = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots()?, Arc::clone(provider));
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map_err(|e| WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: "tls_server_config.client_ca_file".to_owned(),
            reason: e.to_string(),
        })
    };
    Ok(match tls.client_auth_type.unwrap_or_default() {
        ClientAuthType::NoClientCert => None,
        ClientAuthType::RequestClientCert => Some(any(false)),
        ClientAuthType::RequireAnyClientCert => Some(any(true)),
        ClientAuthType::VerifyClientCertIfGiven => Some(verified(true)?),
        ClientAuthType::RequireAndVerifyClientCert => Some(verified(false)?),
    })
}

/// Go's RequestClientCert and RequireAnyClientCert: a certificate is asked for (required or
/// not) and not verified against any CA. Its handshake signature still is: the client must hold
/// the key of the certificate it sends.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The provider's TLS 1.2 suites named (IANA names, which are Go's), in the given order, and all
/// of TLS 1.3's (not configurable, as in Go).
fn cipher_suites(
    provider: &CryptoProvider,
    names: &[String],
) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    let tls12: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .collect();
    let mut chosen = Vec::new();
    for wanted in names {
        let Some(suite) = provider.cipher_suites.iter().find(|s| name(s) == *wanted) else {
            let known: Vec<String> = tls12.iter().map(|s| name(s)).collect();
            return Err(format!(
                "{wanted} is not supported (TLS 1.2 suites here: {})",
                known.join(", ")
            ));
        };
        if suite.version() == &rustls::version::TLS12 {
            chosen.push(*suite);
        }
    }
    chosen.extend(
        provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13),
    );
    Ok(chosen)
}

/// Go's curve names → the provider's key exchange groups, in the given order.
fn curves(
    provider: &CryptoProvider,
    names: &[String],
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, String> {
    names
        .iter()
        .map(|wanted| {
            let group = match wanted.as_str() {
                "X25519" => NamedGroup::X25519,
                "CurveP256" => NamedGroup::secp256r1,
                "CurveP384" => NamedGroup::secp384r1,
                _ => {
                    return Err(format!(
                        "{wanted} is not supported (one of X25519, CurveP256, CurveP384)"
                    ));
                }
            };
            provider
                .kx_groups
                .iter()
                .find(|g| g.name() == group)
                .copied()
                .ok_or_else(|| format!("{wanted} is not supported by this build"))
        })
        .collect()
}
