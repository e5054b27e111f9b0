//! An in-memory [`Backend`] for tests of the launcher's orchestration without Docker: it keeps
//! the objects a real engine would (with their labels and run state), the files copied into
//! each container, and the signals sent; `exec` answers through a handler the test gives; and
//! any call can be made to fail, so each rollback path runs.
//!
//! It is not a container engine: nothing runs. What the real engine does is covered by the
//! Docker tests (`launcher/tests/docker_backend.rs`, `tests/`); this covers what the launcher
//! does around it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bottle_contract::wire;

use super::{
    AttachIo, Attached, Backend, BackendError, ContainerSpec, ContainerState, ContextFile,
    ExecOutput, ExecSpec, ImageBuild, Labels, Object, ObjectKind,
};

/// Answers an `exec`: `(container name, argv) -> output`.
pub(crate) type ExecHandler = Box<dyn Fn(&str, &[String]) -> ExecOutput + Send + Sync>;

/// A call the test wants to fail: the method, and the container name (or object name) it
/// must concern (empty: any), counted from the first matching call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) method: &'static str,
    pub(crate) object: String,
}

#[derive(Default)]
struct State {
    next_id: u64,
    objects: BTreeMap<String, Object>,
    /// Container id -> path -> contents (the last copy wins).
    files: BTreeMap<String, BTreeMap<String, ContextFile>>,
    signals: Vec<(String, String)>,
    calls: Vec<String>,
    /// Shared networks (`ensure_network`), by name.
    networks: std::collections::BTreeSet<String>,
    /// Files every created container has, as if from its image.
    image_files: Vec<ContextFile>,
}

/// See the module comment.
pub(crate) struct MemoryBackend {
    state: Mutex<State>,
    exec: ExecHandler,
    fail: Mutex<Option<Failure>>,
}

impl MemoryBackend {
    /// A backend whose `exec` succeeds with empty output.
    pub(crate) fn new() -> MemoryBackend {
        MemoryBackend::with_exec(Box::new(|_, _| ok("")))
    }

    pub(crate) fn with_exec(exec: ExecHandler) -> MemoryBackend {
        let state = State {
            // What every agent image built from Dockerfile.agent holds.
            image_files: vec![ContextFile::new(
                "/etc/ssl/certs/ca-certificates.crt",
                "(the image's roots)\n",
                0o644,
            )],
            ..State::default()
        };
        MemoryBackend {
            state: Mutex::new(state),
            exec,
            fail: Mutex::new(None),
        }
    }

    /// Containers created from now on start with no files from their image.
    pub(crate) fn without_image_files(self) -> MemoryBackend {
        self.state.lock().unwrap().image_files.clear();
        self
    }

    /// Makes the next call of `method` on `object` (a name or id; empty: any) fail.
    pub(crate) fn fail_on(&self, method: &'static str, object: &str) {
        *self.fail.lock().unwrap() = Some(Failure {
            method,
            object: object.to_owned(),
        });
    }

    /// Every object that exists now.
    /// The shared networks that exist.
    pub(crate) fn networks(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .networks
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn objects(&self) -> Vec<Object> {
        self.state
            .lock()
            .unwrap()
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// The file at `path` in container `name`, as last copied in.
    pub(crate) fn file(&self, name: &str, path: &str) -> Option<ContextFile> {
        let state = self.state.lock().unwrap();
        let id = state.objects.values().find(|o| o.name == name)?.id.clone();
        state.files.get(&id)?.get(path).cloned()
    }

    /// Copies `files` into container `name` directly (a test's setup).
    pub(crate) fn put(&self, name: &str, files: &[ContextFile]) {
        let mut state = self.state.lock().unwrap();
        let Some(id) = state
            .objects
            .values()
            .find(|o| o.name == name)
            .map(|o| o.id.clone())
        else {
            panic!("no container {name}");
        };
        let stored = state.files.entry(id).or_default();
        for f in files {
            stored.insert(f.path.clone(), f.clone());
        }
    }

    /// `(container name, signal)` in the order sent.
    pub(crate) fn signals(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().signals.clone()
    }

    /// `method object` for every call, in order.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Records the call and fails it if the test asked for that.
    fn call(&self, method: &'static str, object: &str) -> Result<(), BackendError> {
        let name = self.name_of(object);
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("{method} {name}"));
        let mut fail = self.fail.lock().unwrap();
        let hit = fail
            .as_ref()
            .is_some_and(|f| f.method == method && (f.object.is_empty() || f.object == name));
        if hit {
            *fail = None;
            return Err(BackendError::Engine {
                action: method,
                object: name,
                message: "injected failure".into(),
            });
        }
        Ok(())
    }

    /// The name of the object `id_or_name` (itself when unknown).
    fn name_of(&self, id_or_name: &str) -> String {
        let state = self.state.lock().unwrap();
        state
            .objects
            .get(id_or_name)
            .map_or_else(|| id_or_name.to_owned(), |o| o.name.clone())
    }

    fn create(&self, kind: ObjectKind, name: &str, labels: &Labels) -> String {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("{kind}-{}", state.next_id);
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let object = Object {
            kind,
            id: id.clone(),
            name: name.to_owned(),
            identity: label(wire::LABEL_IDENTITY),
            role: label(wire::LABEL_ROLE),
            home: label(wire::LABEL_HOME),
            running: false,
        };
        state.objects.insert(id.clone(), object);
        id
    }

    fn id_of(&self, id_or_name: &str) -> Result<String, BackendError> {
        let state = self.state.lock().unwrap();
        if state.objects.contains_key(id_or_name) {
            return Ok(id_or_name.to_owned());
        }
        state
            .objects
            .values()
            .find(|o| o.name == id_or_name)
            .map(|o| o.id.clone())
            .ok_or_else(|| BackendError::Engine {
                action: "find",
                object: id_or_name.to_owned(),
                message: "no such object".into(),
            })
    }
}

/// A successful exec printing `stdout`.
pub(crate) fn ok(stdout: &str) -> ExecOutput {
    ExecOutput {
        exit_code: 0,
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
    }
}

impl Backend for MemoryBackend {
    async fn image_id(&self, tag: &str) -> Result<Option<String>, BackendError> {
        self.call("image_id", tag)?;
        Ok(Some(format!("sha256:{tag}")))
    }

    async fn build_image(
        &self,
        build: &ImageBuild,
        _progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), BackendError> {
        self.call("build_image", &build.tag)
    }

    async fn ensure_network(&self, name: &str, _labels: &Labels) -> Result<String, BackendError> {
        self.call("ensure_network", name)?;
        self.state.lock().unwrap().networks.insert(name.to_owned());
        Ok(format!("network-{name}"))
    }

    async fn remove_network_if_unused(&self, name: &str) -> Result<bool, BackendError> {
        self.call("remove_network_if_unused", name)?;
        let mut state = self.state.lock().unwrap();
        let used = state
            .objects
            .values()
            .any(|o| o.kind == ObjectKind::Container);
        if !used {
            state.networks.remove(name);
        }
        Ok(!used)
    }

    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<String, BackendError> {
        self.call("create_volume", name)?;
        Ok(self.create(ObjectKind::Volume, name, labels))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, BackendError> {
        self.call("create_container", &spec.name)?;
        let id = self.create(ObjectKind::Container, &spec.name, &spec.labels);
        let mut state = self.state.lock().unwrap();
        let files: BTreeMap<String, ContextFile> = state
            .image_files
            .iter()
            .map(|f| (f.path.clone(), f.clone()))
            .collect();
        state.files.insert(id.clone(), files);
        Ok(id)
    }

    async fn copy_into(
        &self,
        container: &str,
        _dest_dir: &str,
        files: &[ContextFile],
    ) -> Result<(), BackendError> {
        self.call("copy_into", container)?;
        let id = self.id_of(container)?;
        let mut state = self.state.lock().unwrap();
        let stored = state.files.entry(id).or_default();
        for f in files {
            stored.insert(f.path.clone(), f.clone());
        }
        Ok(())
    }

    async fn start_container(&self, container: &str) -> Result<(), BackendError> {
        self.call("start_container", container)?;
        let id = self.id_of(container)?;
        if let Some(o) = self.state.lock().unwrap().objects.get_mut(&id) {
            o.running = true;
        }
        Ok(())
    }

    async fn copy_out(&self, container: &str, path: &str) -> Result<Vec<u8>, BackendError> {
        self.call("copy_out", container)?;
        let id = self.id_of(container)?;
        let state = self.state.lock().unwrap();
        let file = state
            .files
            .get(&id)
            .and_then(|f| f.get(path))
            .ok_or_else(|| BackendError::Engine {
                action: "copy_out",
                object: format!("{container}:{path}"),
                message: "no such file".into(),
            })?;
        // As the engine does: a tar holding the one file under its base name.
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(file.contents.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(file.uid);
        header.set_gid(file.gid);
        header.set_cksum();
        let base = path.rsplit('/').next().unwrap_or(path);
        tar.append_data(&mut header, base, &file.contents[..])
            .and_then(|()| tar.into_inner())
            .map_err(|e| BackendError::Engine {
                action: "copy_out",
                object: path.to_owned(),
                message: e.to_string(),
            })
    }

    async fn signal(&self, container: &str, signal: &str) -> Result<(), BackendError> {
        self.call("signal", container)?;
        let name = self.name_of(container);
        self.state
            .lock()
            .unwrap()
            .signals
            .push((name, signal.to_owned()));
        Ok(())
    }

    async fn exec(&self, container: &str, exec: &ExecSpec) -> Result<ExecOutput, BackendError> {
        self.call("exec", container)?;
        Ok((self.exec)(&self.name_of(container), &exec.cmd))
    }

    async fn exec_detached(&self, container: &str, exec: &ExecSpec) -> Result<(), BackendError> {
        self.call("exec_detached", container)?;
        (self.exec)(&self.name_of(container), &exec.cmd);
        Ok(())
    }

    async fn list_objects(&self, identity: Option<&str>) -> Result<Vec<Object>, BackendError> {
        self.call("list_objects", identity.unwrap_or(""))?;
        Ok(self
            .objects()
            .into_iter()
            .filter(|o| identity.is_none_or(|i| o.identity == i))
            .collect())
    }

    async fn remove(&self, kind: ObjectKind, id: &str) -> Result<(), BackendError> {
        self.call("remove", id)?;
        let mut state = self.state.lock().unwrap();
        match state.objects.get(id) {
            Some(o) if o.kind == kind => {
                state.objects.remove(id);
                state.files.remove(id);
                Ok(())
            }
            _ => Err(BackendError::Engine {
                action: "remove",
                object: id.to_owned(),
                message: "no such object".into(),
            }),
        }
    }

    async fn remove_image(&self, tag: &str) -> Result<(), BackendError> {
        self.call("remove_image", tag)
    }

    async fn container_state(&self, container: &str) -> Result<ContainerState, BackendError> {
        self.call("container_state", container)?;
        let id = self.id_of(container)?;
        let running = self
            .state
            .lock()
            .unwrap()
            .objects
            .get(&id)
            .is_some_and(|o| o.running);
        Ok(ContainerState {
            running,
            exit_code: (!running).then_some(0),
        })
    }

    async fn logs(&self, container: &str, _tail: usize) -> Result<String, BackendError> {
        self.call("logs", container)?;
        Ok(String::new())
    }

    async fn attach(&self, container: &str, _io: AttachIo) -> Result<Attached, BackendError> {
        self.call("attach", container)?;
        Ok(Attached::Exited(0))
    }

    async fn exec_attached(
        &self,
        container: &str,
        _exec: &ExecSpec,
        _tty: bool,
        _io: AttachIo,
    ) -> Result<Attached, BackendError> {
        self.call("exec_attached", container)?;
        Ok(Attached::Exited(0))
    }
}
