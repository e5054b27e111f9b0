//! The contract between the `claude-bottle` launcher and the `bottle-bundle` sidecar.
//!
//! Layout: [`bundle_config`] is the JSON document the launcher writes and the bundle reads
//! (routes with token *slot names*, git remotes, supervise settings); [`secrets`] is the separate
//! file that carries token values and never leaves the bundle container; [`wire`] holds the
//! fixed names both sides must agree on (ports, mount paths, labels, host names); [`supervise`]
//! is the proposal/decision queue the bundle's MCP server and the host's dashboard share;
//! [`route`] is the route vocabulary (host, path prefix, header, token name, scheme) every
//! side parses routes with; [`text`] is the one sanitiser for untrusted text on a terminal.
//!
//! Only the types in this crate are serialized across the process boundary. Route values are
//! validated by their own types as they are read ([`route`]), so neither side keeps rules of its
//! own for them. Changing a type here changes the wire format: bump
//! [`SCHEMA_VERSION`] and update the golden fixtures in `tests/fixtures/`.

pub mod bundle_config;
pub mod route;
pub mod secret;
pub mod secrets;
pub mod supervise;
pub mod text;
pub mod wire;

/// Version of [`bundle_config::BundleConfig`]. The bundle refuses any other value.
pub const SCHEMA_VERSION: u32 = 3;
