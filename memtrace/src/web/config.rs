//! `--web-config-file`: the web configuration file of Prometheus' exporter-toolkit
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>), so the
//! file and the scrape config written for any Prometheus exporter work here unchanged.
//!
//! This module reads and checks the YAML; [`super::tls`] turns `tls_server_config` into a rustls
//! configuration and [`super::server`] applies the rest to the HTTP server. Unknown keys are
//! errors with their line (a typo must not silently turn authentication off), and so are the
//! exporter-toolkit options memtrace does not implement, each saying what to do instead.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A web config file is a few hundred bytes; this bounds what a wrong path makes us read.
pub const MAX_WEB_CONFIG_BYTES: u64 = 1 << 20;

/// The file as exporter-toolkit defines it (only the keys memtrace implements parse; the others
/// are named by [`Unsupported`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    /// User name → bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: Option<BTreeMap<String, String>>,
    /// Not implemented: see [`Unsupported`].
    #[serde(default)]
    pub rate_limit: Option<Present>,
}

/// A key whose value is not read: an option memtrace refuses, see [`Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Self)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM text of the server certificate chain (instead of `cert_file`).
    pub cert: Option<String>,
    /// PEM text of the server key (instead of `key_file`).
    pub key: Option<String>,
    /// PEM text of the CAs client certificates are verified against (instead of `client_ca_file`).
    pub client_ca: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_auth_type: Option<ClientAuthType>,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites by their IANA (and Go) names; TLS 1.3's are not configurable.
    pub cipher_suites: Option<Vec<String>>,
    /// Server order wins (rustls' `ignore_client_order`); exporter-toolkit's default, true.
    pub prefer_server_cipher_suites: Option<bool>,
    /// Key exchange groups in preference order: X25519, CurveP256, CurveP384.
    pub curve_preferences: Option<Vec<String>>,
    /// Not implemented: see [`Unsupported`].
    pub client_allowed_sans: Option<Present>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// memtrace serves HTTP/1.1 only; accepted so files written for other exporters load.
    pub http2: Option<bool>,
    /// Extra response headers (only the five exporter-toolkit allows).
    pub headers: Option<BTreeMap<String, String>>,
}

/// Go's `tls.ClientAuthType` names, as exporter-toolkit takes them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClientAuthType {
    /// No client certificate is asked for.
    #[default]
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified (`RequireClientCert` is exporter-toolkit's old name for it).
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    /// Verified against the client CA when given, not required.
    VerifyClientCertIfGiven,
    /// Required and verified against the client CA: the one that authenticates clients.
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

/// Headers a web config may add to every response, with their allowed values (any when empty):
/// exporter-toolkit's list, kept the same so one file serves every exporter.
pub const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// An exporter-toolkit option memtrace does not implement, and what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub key: &'static str,
    pub instead: &'static str,
}

/// Why a web config file cannot be used; each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web config file {} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("web config file {} is larger than {MAX_WEB_CONFIG_BYTES} bytes: is it the right file?", path.display())]
    TooLarge { path: PathBuf },
    /// The YAML parser's message, with line and column.
    #[error("web config file {}: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    #[error("web config file {}: {key} is not supported by memtrace: {instead}", path.display())]
    Unsupported {
        path: PathBuf,
        key: &'static str,
        instead: &'static str,
    },
    #[error("web config file {}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("web config file {}: {key} {}: {reason}", path.display(), file.display())]
    File {
        path: PathBuf,
        key: &'static str,
        file: PathBuf,
        reason: String,
    },
}

impl WebConfigFile {
    /// Parses the YAML text of `path` (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, WebConfigError> {
        let config: Self = serde_saphyr::from_str(text).map_err(|err| {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid YAML");
            WebConfigError::Yaml {
                path: path.to_path_buf(),
                message: first.strip_prefix("error: ").unwrap_or(first).to_owned(),
            }
        })?;
        if let Some(unsupported) = config.unsupported() {
            return Err(WebConfigError::Unsupported {
                path: path.to_path_buf(),
                key: unsupported.key,
                instead: unsupported.instead,
            });
        }
        config.validate(path)?;
        Ok(config)
    }

    /// The first option given that memtrace does not implement.
    fn unsupported(&self) -> Option<Unsupported> {
        if self.rate_limit.is_some() {
            return Some(Unsupported {
                key: "rate_limit",
                instead: "the server bounds connections and request times itself \
                          (--max-connections); remove the key",
            });
        }
        let tls = self.tls_server_config.as_ref()?;
        if tls.client_allowed_sans.is_some() {
            return Some(Unsupported {
                key: "tls_server_config.client_allowed_sans",
                instead: "issue client certificates from a CA of their own and give it as \
                          client_ca_file with client_auth_type RequireAndVerifyClientCert",
            });
        }
        let old = |v: Option<TlsVersion>| matches!(v, Some(TlsVersion::TLS10 | TlsVersion::TLS11));
        if old(tls.min_version) {
            return Some(Unsupported {
                key: "tls_server_config.min_version TLS10/TLS11",
                instead: "rustls speaks TLS12 and TLS13 only; give min_version: TLS12",
            });
        }
        if old(tls.max_version) {
            return Some(Unsupported {
                key: "tls_server_config.max_version TLS10/TLS11",
                instead: "rustls speaks TLS12 and TLS13 only; give max_version: TLS12 or TLS13",
            });
        }
        None
    }

    /// Checks what can be checked without reading other files.
    fn validate(&self, path: &Path) -> Result<(), WebConfigError> {
        let invalid = |key: &str, reason: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            reason,
        };
        for (user, hash) in self.basic_auth_users.iter().flatten() {
            hash.parse::<bcrypt::HashParts>().map_err(|err| {
                invalid(
                    &format!("basic_auth_users.{user}"),
                    format!(
                        "not a bcrypt hash ({err}): give the output of \
                         `htpasswd -nBC 10 \"\" | tr -d ':\\n'`, not the password"
                    ),
                )
            })?;
        }
        for (name, value) in self
            .http_server_config
            .iter()
            .filter_map(|h| h.headers.as_ref())
            .flatten()
        {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| n == name) else {
                let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(invalid(
                    &key,
                    format!("this header cannot be set (one of: {})", names.join(", ")),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(invalid(
                    &key,
                    format!("{value:?} is not one of {}", allowed.join(", ")),
                ));
            }
            if axum::http::HeaderValue::from_str(value).is_err() {
                return Err(invalid(&key, format!("{value:?} is not a header value")));
            }
        }
        let Some(tls) = &self.tls_server_config else {
            return Ok(());
        };
        if let (Some(min), Some(max)) = (tls.min_version, tls.max_version)
            && min > max
        {
            return Err(invalid(
                "tls_server_config.min_version",
                format!("{min:?} is above max_version {max:?}"),
            ));
        }
        let both = |inline: bool, file: bool, key: &str, file_key: &str| {
            if inline && file {
                Err(invalid(
                    key,
                    format!("give either {key} or {file_key}, not both"),
                ))
            } else {
                Ok(())
            }
        };
        both(
            tls.cert.is_some(),
            tls.cert_file.is_some(),
            "tls_server_config.cert",
            "cert_file",
        )?;
        both(
            tls.key.is_some(),
            tls.key_file.is_some(),
            "tls_server_config.key",
            "key_file",
        )?;
        both(
            tls.client_ca.is_some(),
            tls.client_ca_file.is_some(),
            "tls_server_config.client_ca",
            "client_ca_file",
        )?;
        if !tls.is_enabled() {
            return Ok(());
        }
        if tls.cert.is_none() && tls.cert_file.is_none() {
            return Err(invalid(
                "tls_server_config",
                "missing one of cert or cert_file".to_owned(),
            ));
        }
        if tls.key.is_none() && tls.key_file.is_none() {
            return Err(invalid(
                "tls_server_config",
                "missing one of key or key_file".to_owned(),
            ));
        }
        let has_ca = tls.client_ca.is_some() || tls.client_ca_file.is_some();
        let auth = tls.client_auth_type.unwrap_or_default();
        if has_ca && auth == ClientAuthType::NoClientCert {
            return Err(invalid(
                "tls_server_config.client_ca_file",
                "a client CA is given without client_auth_type: give client_auth_type: \
                 RequireAndVerifyClientCert"
                    .to_owned(),
            ));
        }
        if !has_ca
            && matches!(
                auth,
                ClientAuthType::VerifyClientCertIfGiven
                    | ClientAuthType::RequireAndVerifyClientCert
            )
        {
            return Err(invalid(
                "tls_server_config.client_auth_type",
                format!("{auth:?} verifies client certificates: give client_ca_file"),
            ));
        }
        Ok(())
    }

    /// Relative paths are relative to the file's directory (as exporter-toolkit reads them).
    pub fn resolve_paths(&mut self, dir: &Path) {
        if let Some(tls) = &mut self.tls_server_config {
            for file in [
                &mut tls.cert_file,
                &mut tls.key_file,
                &mut tls.client_ca_file,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
    }

    /// The files this config reads besides itself (watched for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        self.tls_server_config
            .iter()
            .flat_map(|t| [&t.cert_file, &t.key_file, &t.client_ca_file])
            .flatten()
            .cloned()
            .collect()
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_server_config
            .as_ref()
            .is_some_and(TlsServerConfig::is_enabled)
    }
}

impl TlsServerConfig {
    /// Any TLS key set turns TLS on (as exporter-toolkit decides it).
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some()
    }
}

/// Reads and parses the file at `path`: a regular file of at most [`MAX_WEB_CONFIG_BYTES`],
/// paths inside it made absolute.
pub fn load(path: &Path) -> Result<WebConfigFile, WebConfigError> {
    let text = read_bounded(path)?;
    let mut config = WebConfigFile::parse(path, &text)?;
    config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
    Ok(config)
}

fn read_bounded(path: &Path) -> Result<String, WebConfigError> {
    use std::io::Read as _;
    let read_err = |source| WebConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(WebConfigError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    file.take(MAX_WEB_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_WEB_CONFIG_BYTES {
        return Err(WebConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real bcrypt hash (cost 4, of "secret") so tests stay fast.
    fn hash() -> String {
        bcrypt::hash("secret", 4).expect("hash")
    }

    fn parse(text: &str) -> Result<WebConfigFile, String> {
        WebConfigFile::parse(Path::new("/etc/memtrace/web.yml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_parses() {
        let text = format!(
            "tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: '1; mode=block'
    Content-Security-Policy: default-src 'self'
basic_auth_users:
  prometheus: {}
",
            hash()
        );
        let mut config = parse(&text).expect("valid");
        let tls = config.tls_server_config.clone().expect("tls");
        assert_eq!(
            tls.client_auth_type,
            Some(ClientAuthType::RequireAndVerifyClientCert)
        );
        assert_eq!(tls.min_version, Some(TlsVersion::TLS12));
        assert_eq!(tls.max_version, Some(TlsVersion::TLS13));
        assert_eq!(tls.prefer_server_cipher_suites, Some(false));
        assert_eq!(
            tls.curve_preferences.as_deref(),
            Some(&["X25519".to_owned(), "CurveP256".to_owned()][..])
        );
        assert_eq!(
            tls.cipher_suites.as_deref(),
            Some(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()][..])
        );
        let http = config.http_server_config.clone().expect("http");
        assert_eq!(http.http2, Some(false));
        assert_eq!(http.headers.expect("headers").len(), 5);
        assert_eq!(config.basic_auth_users.as_ref().map(|u| u.len()), Some(1));
        assert!(config.tls_enabled());
        config.resolve_paths(Path::new("/etc/memtrace"));
        assert_eq!(
            config.files(),
            ["server.crt", "server.key", "ca.crt"].map(|f| Path::new("/etc/memtrace").join(f))
        );
    }

    #[test]
    fn every_client_auth_type_and_the_old_name() {
        for (name, want) in [
            ("NoClientCert", ClientAuthType::NoClientCert),
            ("RequestClientCert", ClientAuthType::RequestClientCert),
            ("RequireAnyClientCert", ClientAuthType::RequireAnyClientCert),
            ("RequireClientCert", ClientAuthType::RequireAnyClientCert),
            (
                "VerifyClientCertIfGiven",
                ClientAuthType::VerifyClientCertIfGiven,
            ),
            (
                "RequireAndVerifyClientCert",
                ClientAuthType::RequireAndVerifyClientCert,
            ),
        ] {
            let ca = if name.contains("Verify") {
                "\n  client_ca_file: ca.pem"
            } else {
                ""
            };
            let config = parse(&format!(
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: {name}{ca}\n"
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                config.tls_server_config.and_then(|t| t.client_auth_type),
                Some(want),
                "{name}"
            );
        }
        let err =
            parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Maybe\n")
                .unwrap_err();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("Maybe"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let err = parse("basic_auth_users: {}\ntls_server_config:\n  cert_file: c\n  keyfile: k\n")
            .unwrap_err();
        assert!(
            err.starts_with(
                "web config file /etc/memtrace/web.yml: line 4 column 3: unknown field `keyfile`"
            ),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let err = parse("basic_auth: {}\n").unwrap_err();
        assert!(
            err.contains("line 1 column 1: unknown field `basic_auth`"),
            "{err}"
        );
    }

    #[test]
    fn a_password_instead_of_a_hash_is_refused() {
        let err = parse("basic_auth_users:\n  alice: hunter2\n").unwrap_err();
        assert!(
            err.starts_with(
                "web config file /etc/memtrace/web.yml: basic_auth_users.alice: not a bcrypt hash"
            ),
            "{err}"
        );
        assert!(
            !err.contains("hunter2"),
            "the secret is not repeated: {err}"
        );
        let truncated = &hash()[..40];
        assert!(parse(&format!("basic_auth_users:\n  alice: '{truncated}'\n")).is_err());
        parse(&format!("basic_auth_users:\n  alice: '{}'\n", hash())).expect("a real hash");
    }

    #[test]
    fn unsupported_options_say_what_to_do() {
        let err = parse("rate_limit:\n  interval: 1s\n  burst: 5\n").unwrap_err();
        assert!(
            err.contains("rate_limit is not supported by memtrace"),
            "{err}"
        );
        let err = parse(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [a]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("client_allowed_sans is not supported"),
            "{err}"
        );
        let err =
            parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n")
                .unwrap_err();
        assert!(err.contains("TLS12 and TLS13 only"), "{err}");
        let err = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS9\n")
            .unwrap_err();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn inconsistent_tls_settings_are_refused() {
        for (text, want) in [
            (
                "tls_server_config:\n  cert_file: c\n",
                "missing one of key or key_file",
            ),
            (
                "tls_server_config:\n  key_file: k\n",
                "missing one of cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  cert: x\n  key_file: k\n",
                "give either tls_server_config.cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
                "a client CA is given without client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "give client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "TLS13 is above max_version TLS12",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // No TLS key at all: plain HTTP (basic auth alone is allowed, as in exporter-toolkit).
        let config = parse("http_server_config:\n  http2: true\n").expect("valid");
        assert!(!config.tls_enabled());
        assert_eq!(parse("").expect("empty"), WebConfigFile::default());
    }

    #[test]
    fn headers_are_limited_as_in_exporter_toolkit() {
        let err =
            parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert!(
            err.contains("\"allow\" is not one of deny, sameorigin"),
            "{err}"
        );
        let err = parse("http_server_config:\n  headers:\n    Server: memtrace\n").unwrap_err();
        assert!(
            err.contains("http_server_config.headers.Server: this header cannot be set"),
            "{err}"
        );
        let err = parse("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n")
            .unwrap_err();
        assert!(err.contains("nosniff"), "{err}");
    }

    #[test]
    fn files_are_read_bounded_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(&dir.path().join("absent.yml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.yml"), "{err}");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("is not a regular file"), "{err}");
        let big = dir.path().join("big.yml");
        std::fs::write(&big, "#".repeat(MAX_WEB_CONFIG_BYTES as usize + 1)).expect("write");
        let err = load(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let ok = dir.path().join("web.yml");
        std::fs::write(
            &ok,
            "tls_server_config:\n  cert_file: tls/c.pem\n  key_file: /abs/k.pem\n",
        )
        .expect("write");
        let config = load(&ok).expect("loads");
        assert_eq!(
            config.files(),
            [dir.path().join("tls/c.pem"), PathBuf::from("/abs/k.pem")]
        );
    }
}
