//! The HTTP client of the commands that talk to daemons (`memtrace cluster`).
//!
//! reqwest (rustls, gzip): a well-kept client that already does what a fan-out needs — connection
//! pooling, per-request timeouts, transparent gzip, TLS with a custom CA and client certificates —
//! so none of it is hand-written here. The options mirror a Prometheus scrape config's
//! `tls_config` (`ca_file`, `cert_file`, `key_file`, `insecure_skip_verify`) and `basic_auth`
//! (`username`, `password_file`), the client side of a daemon's `--web-config-file`.
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::Args;

/// Environment variable holding the basic-auth password (instead of `--password-file`).
pub const PASSWORD_ENV: &str = "MEMTRACE_PASSWORD";

/// Client options (shared by every subcommand that talks to daemons).
#[derive(Args, Clone, Debug, Default)]
pub struct ClientOptions {
    /// CA certificates (PEM) the daemons' certificates must chain to, instead of the public web
    /// roots. Giving any TLS option makes addresses without a scheme `https://`.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for daemons whose web config asks for one (`client_auth_type`).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of --cert-file.
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// User name for daemons whose web config has `basic_auth_users`; the password comes from
    /// --password-file or the environment variable MEMTRACE_PASSWORD (never a flag: the command
    /// line is visible to every user of the machine).
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,

    /// File holding the basic-auth password (surrounding whitespace and the final newline are
    /// ignored, as Prometheus' `password_file`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Do not verify the daemons' TLS certificates (testing only: anyone on the path can then
    /// read and change the answers).
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

/// Options that cannot be applied; each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{flag} {}: {reason}", file.display())]
    File {
        flag: &'static str,
        file: PathBuf,
        reason: String,
    },
    #[error("--username needs a password: give --password-file FILE or set {PASSWORD_ENV}")]
    NoPassword,
    #[error("--password-file (or {PASSWORD_ENV}) needs --username")]
    NoUsername,
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// One failed request to one daemon, said for a person (the target named first).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("401 Unauthorized from {target}: wrong username or password")]
    WrongPassword { target: String },
    #[error(
        "401 Unauthorized from {target}: it asks for a username and password (--username with \
         --password-file or {PASSWORD_ENV})"
    )]
    PasswordRequired { target: String },
    #[error(
        "{target} requires a client certificate (its client_auth_type): give --cert-file and \
         --key-file"
    )]
    ClientCertRequired { target: String },
    #[error(
        "{target} refused our client certificate ({reason}): is it issued by the CA of the \
         daemon's client_ca_file?"
    )]
    ClientCertRefused { target: String, reason: String },
    #[error(
        "{target}: its TLS certificate is not trusted ({reason}): give the CA that issued it with \
         --ca-file"
    )]
    UntrustedServer { target: String, reason: String },
    #[error("{target}: {message}")]
    Other { target: String, message: String },
}

impl ClientOptions {
    /// A client whose every request gives up after `timeout`, with these options applied. Files
    /// are read now: a missing or malformed one is an error naming it.
    pub fn build(&self, timeout: Duration) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .gzip(true)
            .user_agent(concat!("memtrace/", env!("CARGO_PKG_VERSION")))
            .use_rustls_tls();
        if let Some(file) = &self.ca_file {
            let pem = read("--ca-file", file)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| file_error("--ca-file", file, format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(file_error(
                    "--ca-file",
                    file,
                    "no certificate in it".to_owned(),
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let mut pem = read("--cert-file", cert)?;
            check_pem::<rustls_pki_types::CertificateDer<'static>>("--cert-file", cert, &pem)?;
            let key_pem = read("--key-file", key)?;
            check_pem::<rustls_pki_types::PrivateKeyDer<'static>>("--key-file", key, &key_pem)?;
            pem.push(b'\n');
            pem.extend_from_slice(&key_pem);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| file_error("--cert-file", cert, e.to_string()))?;
            builder = builder.identity(identity);
        }
        if let Some(authorization) = self.authorization()? {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, authorization);
            builder = builder.default_headers(headers);
        }
        if self.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder.build().map_err(ClientError::Build)
    }

    /// `https` when any TLS option is given, else `http`: the scheme of an address without one.
    pub fn scheme(&self) -> &'static str {
        if self.ca_file.is_some() || self.cert_file.is_some() || self.insecure_skip_verify {
            "https"
        } else {
            "http"
        }
    }

    /// `target` (`host:port` or a URL) with `path` appended, `scheme()` added when it has none.
    pub fn url(&self, target: &str, path: &str) -> String {
        let base = target.trim_end_matches('/');
        if base.starts_with("http://") || base.starts_with("https://") {
            format!("{base}{path}")
        } else {
            format!("{}://{base}{path}", self.scheme())
        }
    }

    /// The `Authorization` header of `--username`, if given.
    fn authorization(&self) -> Result<Option<reqwest::header::HeaderValue>, ClientError> {
        let password = match &self.password_file {
            Some(file) => Some(
                String::from_utf8(read("--password-file", file)?)
                    .map_err(|_| file_error("--password-file", file, "not UTF-8 text".to_owned()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        let Some(user) = &self.username else {
            return if self.password_file.is_some() {
                Err(ClientError::NoUsername)
            } else {
                Ok(None)
            };
        };
        let password = password.ok_or(ClientError::NoPassword)?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ClientError::NoPassword)?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// GET `path` of `target`: the response if it succeeded (2xx), else the reason, said clearly.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        target: &str,
        path: &str,
    ) -> Result<reqwest::Response, RequestError> {
        let response = client
            .get(self.url(target, path))
            .send()
            .await
            .map_err(|err| explain(&err, target))?;
        self.check(response, target)
    }

    /// A 401 said as what to do; other non-2xx statuses as the status.
    pub fn check(
        &self,
        response: reqwest::Response,
        target: &str,
    ) -> Result<reqwest::Response, RequestError> {
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let target = target.to_owned();
            return Err(if self.username.is_some() {
                RequestError::WrongPassword { target }
            } else {
                RequestError::PasswordRequired { target }
            });
        }
        if !status.is_success() {
            return Err(RequestError::Other {
                target: target.to_owned(),
                message: format!("answered HTTP status {status}"),
            });
        }
        Ok(response)
    }
}

/// A transport error said as its cause: the TLS alert or certificate problem when there is one,
/// else the whole chain of causes on one line.
pub fn explain(err: &reqwest::Error, target: &str) -> RequestError {
    let target = target.to_owned();
    let mut chain = Vec::new();
    let mut tls = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        chain.push(e.to_string());
        if let Some(rustls_error) = e.downcast_ref::<rustls::Error>() {
            tls = Some(rustls_error.clone());
        }
        // io::Error's source() skips the error it wraps, and rustls' errors arrive wrapped in
        // one, sometimes in two.
        let mut wrapped = e.downcast_ref::<std::io::Error>();
        while let Some(inner) = wrapped.and_then(std::io::Error::get_ref) {
            if let Some(rustls_error) = inner.downcast_ref::<rustls::Error>() {
                tls = Some(rustls_error.clone());
            }
            wrapped = inner.downcast_ref::<std::io::Error>();
        }
        next = e.source();
    }
    chain.dedup();
    use rustls::AlertDescription as Alert;
    match tls {
        Some(rustls::Error::AlertReceived(Alert::CertificateRequired)) => {
            RequestError::ClientCertRequired { target }
        }
        Some(rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateExpired
            | Alert::DecryptError),
        )) => RequestError::ClientCertRefused {
            target,
            reason: format!("TLS alert {alert:?}"),
        },
        Some(rustls::Error::InvalidCertificate(reason)) => RequestError::UntrustedServer {
            target,
            reason: format!("{reason:?}"),
        },
        _ => RequestError::Other {
            target,
            message: chain.join(": "),
        },
    }
}

fn file_error(flag: &'static str, file: &Path, reason: String) -> ClientError {
    ClientError::File {
        flag,
        file: file.to_path_buf(),
        reason,
    }
}

fn read(flag: &'static str, file: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(file).map_err(|e| file_error(flag, file, e.to_string()))
}

/// Checks `pem` holds a `T` (a certificate or a key), naming the file when not: reqwest's own
/// error does not say which of the two it could not read.
fn check_pem<T: rustls_pki_types::pem::PemObject>(
    flag: &'static str,
    file: &Path,
    pem: &[u8],
) -> Result<(), ClientError> {
    T::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| file_error(flag, file, format!("not PEM: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_scheme_of_the_options() {
        let plain = ClientOptions::default();
        assert_eq!(plain.url("a:9847", "/metrics"), "http://a:9847/metrics");
        assert_eq!(
            plain.url("https://a:9847/", "/metrics"),
            "https://a:9847/metrics"
        );
        let tls = ClientOptions {
            ca_file: Some("ca.pem".into()),
            ..ClientOptions::default()
        };
        assert_eq!(tls.url("a:9847", "/x"), "https://a:9847/x");
    }

    #[test]
    fn bad_files_and_missing_passwords_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let options = ClientOptions {
            ca_file: Some(missing.clone()),
            ..ClientOptions::default()
        };
        let err = options
            .build(Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("--ca-file {}: ", missing.display())),
            "{err}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").expect("write");
        let options = ClientOptions {
            cert_file: Some(garbage.clone()),
            key_file: Some(garbage.clone()),
            ..ClientOptions::default()
        };
        let err = options
            .build(Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--cert-file ") && err.contains("not PEM"),
            "{err}"
        );
        let options = ClientOptions {
            password_file: Some(garbage),
            ..ClientOptions::default()
        };
        assert!(matches!(
            options.build(Duration::from_secs(1)),
            Err(ClientError::NoUsername)
        ));
    }

    #[test]
    fn the_password_file_is_trimmed_into_a_sensitive_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").expect("write");
        let options = ClientOptions {
            username: Some("prometheus".to_owned()),
            password_file: Some(file),
            ..ClientOptions::default()
        };
        let value = options.authorization().expect("ok").expect("a header");
        assert!(value.is_sensitive());
        let expected = base64::engine::general_purpose::STANDARD.encode("prometheus:s3cret");
        assert_eq!(value.to_str().expect("ascii"), format!("Basic {expected}"));
        options.build(Duration::from_secs(1)).expect("builds");
    }
}
