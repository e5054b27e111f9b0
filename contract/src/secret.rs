//! The one type for a secret value, on both sides of the boundary.

use serde::{Deserialize, Serialize};

/// A secret value (a route token, a bottle's env value). `Debug` is redacted and there is no
/// `Display`, so it cannot end up in a log line, an error or a plan by accident; the only way
/// to the value is [`Secret::expose`], called where it is written to its destination (the
/// secrets file, the header on the wire, the agent's env file). Serialized as the plain
/// string, so the secrets file holds `Secret`s end to end.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself. Call only where it is written to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_serde_is_the_plain_string() {
        let s = Secret::new("ghp_value".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"ghp_value\"");
        assert_eq!(
            serde_json::from_str::<Secret>("\"x\"").unwrap().expose(),
            "x"
        );
    }
}
