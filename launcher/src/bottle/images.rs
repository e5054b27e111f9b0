//! The agent and bundle images: built from the Dockerfiles shipped in this repository
//! (embedded at compile time), tagged by a hash of every input, and rebuilt only when an
//! input changes. Docker's layer cache serves whatever the tag does not.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::backend::{Backend, ContextFile, ImageBuild};
use crate::bottle::claude_bin::{self, ClaudeSource};
use crate::bottle::pipelock_bin::{self, PipelockBin};
use crate::bottle::provision;

/// The build-context directory `Dockerfile.agent` copies into `/usr/local/bin/`: holds the
/// native `claude` executable, or nothing.
const CLAUDE_CONTEXT_DIR: &str = "claude-bin";
/// The bundle binary in the agent's build context, for the relay ([`with_relay`]).
const RELAY_CONTEXT: &str = "bottle-relay";

pub(crate) const AGENT_DOCKERFILE: &str = include_str!("../../../Dockerfile.agent");
pub(crate) const BUNDLE_DOCKERFILE: &str = include_str!("../../../Dockerfile.bundle");

/// The local base image `scripts/base-image` builds (no registry needed).
pub(crate) const LOCAL_BASE_IMAGE: &str = "claude-bottle-base:bookworm";
/// The base image used when there is no local one.
pub(crate) const REGISTRY_BASE_IMAGE: &str = "debian:bookworm-slim";
/// Overrides the base image.
pub(crate) const BASE_IMAGE_ENV: &str = "CLAUDE_BOTTLE_BASE_IMAGE";
/// Overrides where the `bottle-bundle` binary is found.
pub(crate) const BUNDLE_BIN_ENV: &str = "CLAUDE_BOTTLE_BUNDLE_BIN";

/// What the two images are built from.
pub(crate) struct ImageInputs {
    pub(crate) base_image: String,
    pub(crate) bundle_bin: PathBuf,
    /// The pipelock copied into the bundle image (`CLAUDE_BOTTLE_PIPELOCK_BIN`); its bytes
    /// are part of the bundle image's tag.
    pub(crate) pipelock: Option<PipelockBin>,
    /// Where the agent image's Claude Code comes from.
    pub(crate) claude: ClaudeSource,
    /// The agent Dockerfile: the shipped one, or a bottle's approved replacement.
    pub(crate) agent_dockerfile: String,
    /// Where that Dockerfile comes from, for messages (`the shipped Dockerfile.agent`, a path).
    pub(crate) agent_dockerfile_source: String,
}

/// How many lines of build output a failed build's error shows.
const BUILD_LOG_TAIL: usize = 25;

/// The tags to run.
pub(crate) struct Images {
    pub(crate) agent: String,
    pub(crate) bundle: String,
}

/// Finds the `bottle-bundle` binary: `$CLAUDE_BOTTLE_BUNDLE_BIN`, else next to this executable.
pub(crate) fn find_bundle_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BUNDLE_BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{BUNDLE_BIN_ENV}={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot locate the claude-bottle executable")?;
    let sibling = exe.with_file_name("bottle-bundle");
    anyhow::ensure!(
        sibling.is_file(),
        "cannot find the bottle-bundle binary next to {} (install it with `cargo install --path bundle`, or set {BUNDLE_BIN_ENV})",
        exe.display()
    );
    Ok(sibling)
}

/// `$CLAUDE_BOTTLE_BASE_IMAGE`, else the local base image when present, else Debian's.
pub(crate) async fn choose_base_image<B: Backend>(backend: &B) -> anyhow::Result<String> {
    if let Ok(image) = std::env::var(BASE_IMAGE_ENV)
        && !image.is_empty()
    {
        return Ok(image);
    }
    Ok(match backend.image_id(LOCAL_BASE_IMAGE).await? {
        Some(_) => LOCAL_BASE_IMAGE.to_owned(),
        None => REGISTRY_BASE_IMAGE.to_owned(),
    })
}

/// Builds whichever image is missing, printing build output through `progress`.
pub(crate) async fn ensure<B: Backend>(
    backend: &B,
    inputs: &ImageInputs,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Images> {
    // A rebuilt base image must rebuild ours: its id is an input.
    let base_id = backend
        .image_id(&inputs.base_image)
        .await?
        .unwrap_or_default();
    // Not on this machine: the engine pulls it, which fails without a registry (with a DNS or
    // connection error that does not say what to do).
    let base_missing = |e: anyhow::Error| {
        if base_id.is_empty() {
            e.context(format!(
                "the base image {base} is not on this machine and the engine could not fetch it \
                 (is a registry reachable?); run `scripts/base-image` to build {LOCAL_BASE_IMAGE} \
                 locally, or set {BASE_IMAGE_ENV} to a Debian image the engine has",
                base = inputs.base_image
            ))
        } else {
            e
        }
    };
    // `CLAUDE_BOTTLE_BUNDLE_BIN` may name anything: the one bounded reader.
    let bundle_bin = crate::hostfile::read_bounded(&inputs.bundle_bin, MAX_BINARY_BYTES)?;
    let mut bundle_context = vec![ContextFile::new("bottle-bundle", bundle_bin.clone(), 0o755)];
    if let Some(bin) = &inputs.pipelock {
        bundle_context.push(ContextFile::new(
            "pipelock",
            pipelock_bin::read(bin)?,
            0o755,
        ));
    }
    let bundle = build_if_missing(
        backend,
        "claude-bottle-bundle",
        BUNDLE_DOCKERFILE,
        bundle_context,
        BTreeMap::from([("BASE_IMAGE".to_owned(), inputs.base_image.clone())]),
        "prebuilt",
        &base_id,
        progress,
    )
    .await
    .map_err(base_missing)?;

    let install = if inputs.claude == ClaudeSource::Npm {
        "1"
    } else {
        "0"
    };
    let mut agent_context = vec![
        ContextFile::dir(CLAUDE_CONTEXT_DIR, 0o755),
        ContextFile::new(RELAY_CONTEXT, bundle_bin, 0o755),
    ];
    if let ClaudeSource::Native { path, .. } = &inputs.claude {
        agent_context.push(ContextFile::new(
            format!("{CLAUDE_CONTEXT_DIR}/claude"),
            claude_bin::read(path)?,
            0o755,
        ));
    }
    let agent = build_if_missing(
        backend,
        "claude-bottle-agent",
        &with_relay(&inputs.agent_dockerfile),
        agent_context,
        BTreeMap::from([
            ("BASE_IMAGE".to_owned(), inputs.base_image.clone()),
            ("INSTALL_CLAUDE".to_owned(), install.to_owned()),
        ]),
        "",
        &base_id,
        progress,
    )
    .await
    .with_context(|| {
        format!(
            "building the agent image from {} failed",
            inputs.agent_dockerfile_source
        )
    })
    .map_err(base_missing)?;
    Ok(Images { agent, bundle })
}

/// The agent's Dockerfile (shipped or approved) with the relay binary added as its last layer:
/// in the image, it is not copied into every agent at start (a debug build of the bundle is a
/// few hundred MB, a release build about 25 MB: a third of a start's time under load). Added
/// here, not in `Dockerfile.agent`, so an approved replacement Dockerfile cannot lose it; the
/// agent reads the Dockerfile without this line.
pub(crate) fn with_relay(dockerfile: &str) -> String {
    format!(
        "{}\n# Added by claude-bottle: the relay (runs as uid 999; root-owned, the agent cannot replace it).\nCOPY {RELAY_CONTEXT} {}\n",
        dockerfile.trim_end(),
        provision::RELAY_BIN
    )
}

/// Largest bundle binary copied into the image: a debug build of the bundle is a few hundred
/// MB, so 1 GiB only stops a runaway or a device.
const MAX_BINARY_BYTES: u64 = 1 << 30;

/// The tag for these inputs: `<repo>:<first 16 hex of sha256>`.
fn tag_for(
    repo: &str,
    dockerfile: &str,
    context: &[ContextFile],
    args: &BTreeMap<String, String>,
    target: &str,
    base_id: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [dockerfile, target, base_id] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for (k, v) in args {
        h.update(format!("{k}={v}\n").as_bytes());
    }
    for f in context {
        h.update(f.path.as_bytes());
        h.update(f.mode.to_le_bytes());
        h.update(Sha256::digest(&f.contents));
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{repo}:{hex}")
}

#[allow(clippy::too_many_arguments)] // One call site each; a struct would only rename them.
async fn build_if_missing<B: Backend>(
    backend: &B,
    repo: &str,
    dockerfile: &str,
    context: Vec<ContextFile>,
    build_args: BTreeMap<String, String>,
    target: &str,
    base_id: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<String> {
    let tag = tag_for(repo, dockerfile, &context, &build_args, target, base_id);
    if backend.image_id(&tag).await?.is_some() {
        progress(&format!("image {tag} is up to date"));
        return Ok(tag);
    }
    progress(&format!("building image {tag}"));
    let build = ImageBuild {
        tag: tag.clone(),
        dockerfile: dockerfile.to_owned(),
        context,
        build_args,
        target: target.to_owned(),
        labels: BTreeMap::from([(
            bottle_contract::wire::LABEL_MANAGED.to_owned(),
            "true".to_owned(),
        )]),
    };
    // Keep the last lines: a failure's own message rarely says which step broke.
    let mut tail = std::collections::VecDeque::with_capacity(BUILD_LOG_TAIL);
    let built = backend
        .build_image(&build, &mut |line: &str| {
            if tail.len() == BUILD_LOG_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
            progress(line);
        })
        .await;
    if let Err(e) = built {
        let log: Vec<String> = tail.into_iter().map(|l| format!("  | {l}")).collect();
        anyhow::bail!("{e}\nthe last lines of the build log:\n{}", log.join("\n"));
    }
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_change_with_every_input() {
        let args = BTreeMap::from([("BASE_IMAGE".to_owned(), "b".to_owned())]);
        let ctx = vec![ContextFile::new("bottle-bundle", b"v1".to_vec(), 0o755)];
        let base = tag_for("r", "FROM x", &ctx, &args, "", "sha256:1");
        assert!(base.starts_with("r:") && base.len() == 2 + 16, "{base}");
        assert_eq!(base, tag_for("r", "FROM x", &ctx, &args, "", "sha256:1"));
        let other_bin = vec![ContextFile::new("bottle-bundle", b"v2".to_vec(), 0o755)];
        let other_args = BTreeMap::from([("BASE_IMAGE".to_owned(), "c".to_owned())]);
        for changed in [
            tag_for("r", "FROM y", &ctx, &args, "", "sha256:1"),
            tag_for("r", "FROM x", &other_bin, &args, "", "sha256:1"),
            tag_for("r", "FROM x", &ctx, &other_args, "", "sha256:1"),
            tag_for("r", "FROM x", &ctx, &args, "prebuilt", "sha256:1"),
            tag_for("r", "FROM x", &ctx, &args, "", "sha256:2"),
        ] {
            assert_ne!(base, changed);
        }
    }

    #[test]
    fn the_relay_is_the_agent_images_last_layer_whatever_the_dockerfile() {
        for dockerfile in [
            AGENT_DOCKERFILE,
            "FROM x\nUSER nobody",
            "FROM a AS b\nFROM b\n\n",
        ] {
            let built = with_relay(dockerfile);
            assert!(built.starts_with(dockerfile.trim_end()));
            assert_eq!(
                built.lines().last(),
                Some(format!("COPY {RELAY_CONTEXT} {}", provision::RELAY_BIN).as_str())
            );
        }
    }

    #[test]
    fn the_shipped_dockerfiles_are_embedded() {
        assert!(BUNDLE_DOCKERFILE.contains("AS prebuilt"));
        assert!(AGENT_DOCKERFILE.contains("INSTALL_CLAUDE"));
    }
}
