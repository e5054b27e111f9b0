//! The one seam between the launcher and a container engine.
//!
//! Commands describe what they want with the plain types here ([`ContainerSpec`],
//! [`ImageBuild`], …) and call a [`Backend`]. Only `docker.rs` knows bollard; a later backend
//! (kube, a microVM) is a new file implementing the same trait.
//!
//! Every object a backend creates carries [`Labels`], so `claude-bottle list` and `cleanup` find
//! a bottle's objects even after the launcher was SIGKILLed. Creation goes through a
//! [`Ledger`], which removes what it recorded when a later step fails (nothing half-created).

pub mod docker;
#[cfg(test)]
pub(crate) mod memory;

use std::collections::BTreeMap;

use bottle_contract::wire;

/// Why an engine call failed. Messages name the object and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "cannot reach the Docker engine ({0}); is the daemon running and is DOCKER_HOST right?"
    )]
    Connect(String),
    #[error("building image {tag} failed: {message}")]
    Build { tag: String, message: String },
    #[error("{action} {object}: {message}")]
    Engine {
        action: &'static str,
        object: String,
        message: String,
    },
}

/// Labels put on every object of one bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// The labels of bottle `identity`'s object playing `role` (`agent`, `bundle`, `egress`…).
    pub fn for_bottle(identity: &str, role: &str) -> Labels {
        let mut map = BTreeMap::new();
        map.insert(wire::LABEL_MANAGED.to_owned(), "true".to_owned());
        map.insert(wire::LABEL_IDENTITY.to_owned(), identity.to_owned());
        map.insert(wire::LABEL_ROLE.to_owned(), role.to_owned());
        Labels(map)
    }

    /// The labels of a network every bottle of manifest home `home` shares. Not the managed
    /// label: it belongs to no bottle, so `list` and `cleanup` never take it for one (it is
    /// removed by name when its last bottle goes).
    pub fn shared(home: &str) -> Labels {
        let mut map = BTreeMap::new();
        map.insert(wire::LABEL_HOME.to_owned(), home.to_owned());
        map.insert(wire::LABEL_ROLE.to_owned(), "egress".to_owned());
        Labels(map)
    }

    /// The same labels plus the manifest home they belong to.
    pub fn in_home(mut self, home: &str) -> Labels {
        self.0.insert(wire::LABEL_HOME.to_owned(), home.to_owned());
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

/// An image to build from a Dockerfile and a small context.
#[derive(Debug, Clone)]
pub struct ImageBuild {
    /// The tag to give the image (`claude-bottle-agent:<hash>`).
    pub tag: String,
    /// The Dockerfile text.
    pub dockerfile: String,
    /// Other files of the build context: (path in the context, contents, mode).
    pub context: Vec<ContextFile>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`, for multi-stage Dockerfiles; empty builds the last stage.
    pub target: String,
    pub labels: BTreeMap<String, String>,
}

/// One file of a build context or of a copy into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// Owner uid/gid inside the container (copies only; builds ignore it).
    pub uid: u64,
    pub gid: u64,
    /// Modification time, seconds since the Unix epoch: a copied host file keeps its own;
    /// 0 for generated files (build contexts stay byte-for-byte reproducible).
    pub mtime: u64,
}

impl ContextFile {
    /// A root-owned file with `mode`.
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> ContextFile {
        ContextFile {
            path: path.into(),
            contents: contents.into(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    /// A directory (its path ends with `/`), so copies can create it with an owner.
    pub fn dir(path: impl Into<String>, mode: u32) -> ContextFile {
        let mut path = path.into();
        if !path.ends_with('/') {
            path.push('/');
        }
        ContextFile::new(path, Vec::new(), mode)
    }

    pub fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }

    /// The same file, last modified at `mtime` (seconds since the epoch).
    pub fn modified_at(mut self, mtime: u64) -> ContextFile {
        self.mtime = mtime;
        self
    }

    /// The same file owned by `uid:gid`.
    pub fn owned_by(mut self, uid: u64, gid: u64) -> ContextFile {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// How a container is attached to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// `NetworkMode: none`: only `lo`. The agent's mode.
    None,
    /// One user-defined network, reachable under these aliases.
    Attached {
        network: String,
        aliases: Vec<String>,
    },
}

/// A named volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub volume: String,
    pub target: String,
    pub read_only: bool,
}

/// A host directory mounted into a container (the supervise queue, into the bundle only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute host path; it must exist.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// Everything needed to create one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: Labels,
    /// Replaces the image's CMD; empty keeps it.
    pub cmd: Vec<String>,
    /// Replaces the image's ENTRYPOINT when set.
    pub entrypoint: Option<Vec<String>>,
    /// `uid[:gid]` or a user name; empty keeps the image's.
    pub user: String,
    /// `NAME=value` entries. Never a secret: use a file copied in instead.
    pub env: Vec<String>,
    pub network: Network,
    pub volumes: Vec<VolumeMount>,
    /// Host directories; empty for the agent, always.
    pub binds: Vec<BindMount>,
    /// Drop every Linux capability.
    pub cap_drop_all: bool,
    /// `no-new-privileges`: setuid binaries cannot raise privileges.
    pub no_new_privileges: bool,
    /// An OCI runtime other than the default (`runsc` for gVisor).
    pub runtime: Option<String>,
    /// Allocate a tty and keep stdin open, for an interactive agent.
    pub tty: bool,
    pub working_dir: Option<String>,
    /// `/etc/hosts` entries, `name:address`.
    pub extra_hosts: Vec<String>,
    /// Docker's init (tini) as PID 1: reaps orphans and forwards signals, for a command that
    /// is not an init itself (the agent's `sleep` or shell would let zombies pile up).
    pub init: bool,
    /// Memory, process and CPU caps; every container gets them, so one bottle cannot starve
    /// the host or the other bottles.
    pub limits: ResourceLimits,
}

/// A container's resource caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory in bytes; memory plus swap is set to the same, so it cannot swap beyond it.
    pub memory_bytes: u64,
    /// Processes and threads together.
    pub pids: i64,
    /// Billionths of a CPU.
    pub nano_cpus: i64,
}

/// A command to run in a running container.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub user: String,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// What a finished exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The kinds of object a bottle owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    Container,
    Network,
    Volume,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Container => "container",
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
        })
    }
}

/// A labelled object found in the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Object {
    pub kind: ObjectKind,
    /// The engine's id (volumes: their name).
    pub id: String,
    pub name: String,
    /// The `claude-bottle.identity` label.
    pub identity: String,
    /// The `claude-bottle.role` label.
    pub role: String,
    /// The `claude-bottle.home` label (empty when absent).
    pub home: String,
    /// Containers: whether it is running.
    pub running: bool,
}

impl Object {
    /// Objects grouped by their identity label (one group per bottle).
    pub(crate) fn by_identity(
        objects: &[Object],
    ) -> std::collections::BTreeMap<String, Vec<Object>> {
        let mut groups: std::collections::BTreeMap<String, Vec<Object>> = Default::default();
        for o in objects {
            groups
                .entry(o.identity.clone())
                .or_default()
                .push(o.clone());
        }
        groups
    }

    /// A bottle's state as its agent container shows it: `running`, `stopped` or `missing`.
    pub(crate) fn agent_status(objects: &[Object]) -> &'static str {
        match objects
            .iter()
            .find(|o| o.kind == ObjectKind::Container && o.role == "agent")
        {
            Some(o) if o.running => "running",
            Some(_) => "stopped",
            None => "missing",
        }
    }
}

/// A container engine.
#[allow(async_fn_in_trait)] // Used with concrete types only; no dyn, no Send bound needed.
pub trait Backend {
    /// The id of the image with this tag, or `None` when there is none.
    async fn image_id(&self, tag: &str) -> Result<Option<String>, BackendError>;
    /// Builds an image, reporting each line of build output to `progress`.
    async fn build_image(
        &self,
        build: &ImageBuild,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), BackendError>;
    /// The bridge network `name`, created if it does not exist yet, with traffic between its
    /// containers dropped (`com.docker.network.bridge.enable_icc=false`): each container on
    /// it reaches the outside, never another. Docker does not keep network names unique, so
    /// callers serialize this (launchers of one home take its lock file first).
    async fn ensure_network(&self, name: &str, labels: &Labels) -> Result<String, BackendError>;
    /// Removes network `name` if no container is attached to it (and it still exists).
    /// Returns whether it is gone.
    async fn remove_network_if_unused(&self, name: &str) -> Result<bool, BackendError>;
    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<String, BackendError>;
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, BackendError>;
    /// Copies files into a (created or running) container under `dest_dir`, which must exist.
    async fn copy_into(
        &self,
        container: &str,
        dest_dir: &str,
        files: &[ContextFile],
    ) -> Result<(), BackendError>;
    async fn start_container(&self, container: &str) -> Result<(), BackendError>;
    /// `path` (a file or directory) out of a container, running or stopped, as a tar archive.
    async fn copy_out(&self, container: &str, path: &str) -> Result<Vec<u8>, BackendError>;
    /// Sends a signal (`SIGHUP`, …) to a running container's PID 1.
    async fn signal(&self, container: &str, signal: &str) -> Result<(), BackendError>;
    /// Runs a command to completion and collects its output.
    async fn exec(&self, container: &str, exec: &ExecSpec) -> Result<ExecOutput, BackendError>;
    /// Starts a command and returns at once (it runs as long as the container does).
    async fn exec_detached(&self, container: &str, exec: &ExecSpec) -> Result<(), BackendError>;
    /// Every object carrying the managed label, optionally only bottle `identity`'s.
    async fn list_objects(&self, identity: Option<&str>) -> Result<Vec<Object>, BackendError>;
    /// Removes an object; an object that is already gone is not an error.
    async fn remove(&self, kind: ObjectKind, id: &str) -> Result<(), BackendError>;
    /// Removes an image by tag; an image that is already gone is not an error.
    async fn remove_image(&self, tag: &str) -> Result<(), BackendError>;
    /// Whether the container runs, and its exit code once it has stopped.
    async fn container_state(&self, container: &str) -> Result<ContainerState, BackendError>;
    /// The last `tail` lines of the container's output.
    async fn logs(&self, container: &str, tail: usize) -> Result<String, BackendError>;
    /// Connects the terminal to a tty container until it exits or the user detaches.
    async fn attach(&self, container: &str, io: AttachIo) -> Result<Attached, BackendError>;
    /// Runs a command connected to the terminal (`io`; stdin only when given, a tty when
    /// `tty`) until it exits or the user detaches.
    async fn exec_attached(
        &self,
        container: &str,
        exec: &ExecSpec,
        tty: bool,
        io: AttachIo,
    ) -> Result<Attached, BackendError>;
}

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// The process exited with this code.
    Exited(i64),
    /// The user typed the detach keys (Ctrl-P Ctrl-Q); the process keeps running.
    Detached,
}

/// A container's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    pub exit_code: Option<i64>,
}

/// The terminal side of [`Backend::attach`].
pub struct AttachIo {
    /// Raw bytes typed by the user; `None`: the process gets no stdin.
    pub stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>,
    /// Where the container's tty output (and, without a tty, its stdout) goes.
    pub stdout: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Where its stderr goes when there is no tty.
    pub stderr: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Terminal sizes (columns, rows), the current one first, then one per resize.
    pub resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
}

/// Records what a multi-step start created, so a failed step can remove it all.
#[derive(Debug, Default)]
pub struct Ledger {
    created: Vec<(ObjectKind, String)>,
}

impl Ledger {
    pub fn record(&mut self, kind: ObjectKind, id: impl Into<String>) {
        self.created.push((kind, id.into()));
    }

    /// Takes over what `other` recorded, after what this one holds.
    pub fn absorb(&mut self, other: Ledger) {
        self.created.extend(other.created);
    }

    /// What was recorded, in creation order.
    pub fn objects(&self) -> &[(ObjectKind, String)] {
        &self.created
    }

    /// Removes everything recorded, newest first (containers before the network and volume
    /// they use). Keeps going past failures and returns them all; running it twice is harmless.
    pub async fn roll_back<B: Backend>(&mut self, backend: &B) -> Vec<BackendError> {
        let mut errors = Vec::new();
        while let Some((kind, id)) = self.created.pop() {
            if let Err(e) = backend.remove(kind, &id).await {
                errors.push(e);
            }
        }
        errors
    }
}

/// Removes every object in `objects`: containers first, then networks and volumes.
pub async fn remove_all<B: Backend>(backend: &B, objects: &[Object]) -> Vec<BackendError> {
    let mut sorted = objects.to_vec();
    sorted.sort();
    let mut errors = Vec::new();
    for object in sorted {
        if let Err(e) = backend.remove(object.kind, &object.id).await {
            errors.push(e);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_identity_role_and_managed() {
        let labels = Labels::for_bottle("dev-ab12c", "agent");
        let map: BTreeMap<_, _> = labels.iter().collect();
        assert_eq!(map[&wire::LABEL_IDENTITY.to_owned()], "dev-ab12c");
        assert_eq!(map[&wire::LABEL_ROLE.to_owned()], "agent");
        assert_eq!(map[&wire::LABEL_MANAGED.to_owned()], "true");
        assert!(!map.contains_key(&wire::LABEL_HOME.to_owned()));
        let homed = Labels::for_bottle("dev-ab12c", "agent").in_home("/h/.claude-bottle");
        let map: BTreeMap<_, _> = homed.iter().collect();
        assert_eq!(map[&wire::LABEL_HOME.to_owned()], "/h/.claude-bottle");
    }

    #[test]
    fn containers_sort_before_networks_and_volumes() {
        let mk = |kind| Object {
            kind,
            id: "x".into(),
            name: "x".into(),
            identity: "i".into(),
            role: "r".into(),
            home: String::new(),
            running: false,
        };
        let mut objects = [
            mk(ObjectKind::Volume),
            mk(ObjectKind::Network),
            mk(ObjectKind::Container),
        ];
        objects.sort();
        let kinds: Vec<_> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [
                ObjectKind::Container,
                ObjectKind::Network,
                ObjectKind::Volume
            ]
        );
    }
}
