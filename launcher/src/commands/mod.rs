//! One module per subcommand. Each prints its own output; errors go back to `main` as
//! `anyhow::Error`, with `ManifestError` kept in the chain for the exit status.

pub(crate) mod approve;
pub(crate) mod attach;
pub(crate) mod cleanup;
pub(crate) mod completions;
pub(crate) mod dashboard;
pub(crate) mod exec;
pub(crate) mod info;
pub(crate) mod init;
pub(crate) mod list;
pub(crate) mod reject;
pub(crate) mod resume;
pub(crate) mod start;
pub(crate) mod stop;

/// `n thing` or `n things`, for counts in messages (`thing` must pluralise with an `s`).
pub(crate) fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Runs a Docker-facing command on a fresh runtime. The runtime is not waited for on the way
/// out: a thread reading the terminal cannot be joined.
pub(crate) fn block_on<F: std::future::Future<Output = anyhow::Result<u8>>>(
    f: F,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let out = rt.block_on(f);
    rt.shutdown_background();
    out
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(count(1, "bottle"), "1 bottle");
        assert_eq!(count(4, "object"), "4 objects");
        assert_eq!(count(0, "route token"), "0 route tokens");
    }
}
