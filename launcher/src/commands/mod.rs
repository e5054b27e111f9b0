//! One module per subcommand. Each prints its own output; errors go back to `main` as
//! `anyhow::Error`, with `ManifestError` kept in the chain for the exit status.

pub(crate) mod completions;
pub(crate) mod info;
pub(crate) mod init;
pub(crate) mod start;
