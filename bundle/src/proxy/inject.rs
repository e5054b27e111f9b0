//! Credential injection: the agent's own credentials are removed and the bundle's are put on
//! the wire. Token values live only in [`Secret`] and in sensitive `HeaderValue`s.

use base64::Engine as _;
use bottle_contract::route::{AuthScheme, RouteAuth};
use bottle_contract::secrets::SecretsFile;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Why an `auth` block could not be turned into an injection. Never carries the value.
#[derive(Debug, thiserror::Error)]
pub enum InjectionError {
    #[error("token slot {0:?} is not in the secrets file")]
    MissingSlot(String),
    #[error("the token in slot {0:?} is not a valid header value (control characters?)")]
    BadValue(String),
    #[error("header name {0:?} is not a valid HTTP header name")]
    BadHeaderName(String),
    #[error("slot {0:?}: a Basic credential must be `user:password`")]
    BasicNeedsColon(String),
}

/// One route's credential: the header it is sent in and its ready-made value.
pub(crate) struct Injection {
    header: HeaderName,
    value: HeaderValue,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Injection {
    /// Builds the header for one route from its `auth` block and the secrets file.
    pub(crate) fn from_config(
        auth: &RouteAuth,
        secrets: &SecretsFile,
    ) -> Result<Injection, InjectionError> {
        let slot = auth.token_ref.as_str();
        let secret = secrets
            .tokens
            .get(slot)
            .ok_or_else(|| InjectionError::MissingSlot(slot.to_owned()))?;
        let (header, text) = match &auth.scheme {
            AuthScheme::Bearer => (AUTHORIZATION, format!("Bearer {}", secret.expose())),
            AuthScheme::Token => (AUTHORIZATION, format!("token {}", secret.expose())),
            AuthScheme::Basic => {
                if !secret.expose().contains(':') {
                    return Err(InjectionError::BasicNeedsColon(slot.to_owned()));
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(secret.expose());
                (AUTHORIZATION, format!("Basic {encoded}"))
            }
            // The contract's `HeaderName` is an HTTP token and never a reserved header.
            AuthScheme::Header { name } => {
                let header = HeaderName::from_bytes(name.as_str().as_bytes())
                    .map_err(|_| InjectionError::BadHeaderName(name.to_string()))?;
                (header, secret.expose().to_owned())
            }
        };
        let mut value =
            HeaderValue::from_str(&text).map_err(|_| InjectionError::BadValue(slot.to_owned()))?;
        value.set_sensitive(true);
        Ok(Injection { header, value })
    }

    /// Removes every credential the agent sent and sets the route's own.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.remove(AUTHORIZATION);
        headers.remove(PROXY_AUTHORIZATION);
        headers.remove(&self.header);
        headers.insert(self.header.clone(), self.value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injection(scheme: AuthScheme, value: &str) -> Result<Injection, InjectionError> {
        let mut secrets = SecretsFile::default();
        secrets.tokens.insert(
            "S".into(),
            bottle_contract::secret::Secret::new(value.into()),
        );
        let auth = RouteAuth {
            scheme,
            token_ref: "S".parse().unwrap(),
        };
        Injection::from_config(&auth, &secrets)
    }

    fn applied(scheme: AuthScheme, value: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer agent-own"));
        headers.insert("x-api-key", HeaderValue::from_static("agent-key"));
        headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic eA=="));
        injection(scheme, value).unwrap().apply(&mut headers);
        let mut lines: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        lines.sort();
        lines.join("\n")
    }

    #[test]
    fn schemes() {
        expect_test::expect![[r#"
            authorization: Bearer tok
            x-api-key: agent-key"#]]
        .assert_eq(&applied(AuthScheme::Bearer, "tok"));
        expect_test::expect![[r#"
            authorization: token tok
            x-api-key: agent-key"#]]
        .assert_eq(&applied(AuthScheme::Token, "tok"));
        expect_test::expect![[r#"
            authorization: Basic dTpw
            x-api-key: agent-key"#]]
        .assert_eq(&applied(AuthScheme::Basic, "u:p"));
        expect_test::expect!["x-api-key: tok"].assert_eq(&applied(
            AuthScheme::Header {
                name: "x-api-key".parse().unwrap(),
            },
            "tok",
        ));
    }

    #[test]
    fn errors_and_debug_never_show_the_value() {
        let inj = injection(AuthScheme::Bearer, "sekrit-value").unwrap();
        assert!(!format!("{inj:?}").contains("sekrit"));
        let err = injection(AuthScheme::Bearer, "bad\nsekrit")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sekrit"), "{err}");
        let err = injection(AuthScheme::Basic, "sekrit")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sekrit"), "{err}");
    }
}
