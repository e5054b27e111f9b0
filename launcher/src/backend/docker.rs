//! The Docker backend: the only module that talks to the engine (through bollard).
//!
//! The engine API version is negotiated at connect, so an older daemon (this project's CI runs
//! 20.10, API 1.41) gets requests it understands.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HostConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use bottle_contract::wire;

use crate::manifest::values::strip_terminal_sequences;

use super::{
    AttachIo, Attached, Backend, BackendError, ContainerSpec, ContainerState, ContextFile,
    ExecOutput, ExecSpec, ImageBuild, Labels, Network, Object, ObjectKind, ResourceLimits,
};

/// How many times (20 ms apart) to ask for an exec's exit code after its output ended.
const EXEC_EXIT_POLLS: usize = 250;

/// What the plan asks the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Registered OCI runtimes (`runc`, `runsc`, …), sorted.
    pub runtimes: Vec<String>,
    /// CPUs the engine can schedule on (`None` when it does not say).
    pub cpus: Option<u32>,
    /// The gateway of every Docker network: the host's own address on each bridge.
    pub bridge_gateways: Vec<std::net::IpAddr>,
}

/// A connection to the local Docker engine.
#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
}

impl DockerBackend {
    /// Connects through `DOCKER_HOST` or the default socket and negotiates the API version.
    pub async fn connect() -> Result<DockerBackend, BackendError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| BackendError::Connect(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| BackendError::Connect(e.to_string()))?;
        Ok(DockerBackend { docker })
    }

    /// The OCI runtimes the engine has registered and how many CPUs it has.
    pub async fn engine_info(&self) -> Result<EngineInfo, BackendError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| engine_error("query", "engine info", e))?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        let cpus = info
            .ncpu
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0);
        let networks = self
            .docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(|e| engine_error("list", "networks", e))?;
        let bridge_gateways = networks
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| match c.gateway.as_deref() {
                Some(gateway) => gateway.parse().ok(),
                // The default bridge names only its subnet; Docker gives the host its first
                // address.
                None => first_host(c.subnet.as_deref()?),
            })
            .collect();
        Ok(EngineInfo {
            runtimes,
            cpus,
            bridge_gateways,
        })
    }
}

/// The first host address of CIDR `subnet` (`172.17.0.0/16` -> `172.17.0.1`).
fn first_host(subnet: &str) -> Option<std::net::IpAddr> {
    let net: std::net::IpAddr = subnet.split_once('/')?.0.parse().ok()?;
    Some(match net {
        std::net::IpAddr::V4(a) => std::net::IpAddr::V4(u32::from(a).checked_add(1)?.into()),
        std::net::IpAddr::V6(a) => std::net::IpAddr::V6(u128::from(a).checked_add(1)?.into()),
    })
}

fn engine_error(action: &'static str, object: impl Into<String>, e: DockerError) -> BackendError {
    let message = match e {
        DockerError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    BackendError::Engine {
        action,
        object: object.into(),
        message,
    }
}

/// The bridge driver's option that, set to `false`, drops traffic between a network's
/// containers.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn label_map(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A tar archive of `files` (paths relative to its root), with their modes and owners.
fn tar_of(files: &[ContextFile]) -> Result<Vec<u8>, std::io::Error> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(file.mode);
        header.set_uid(file.uid);
        header.set_gid(file.gid);
        header.set_mtime(file.mtime);
        let path = file.path.trim_start_matches('/');
        if file.is_dir() {
            header.set_size(0);
            header.set_entry_type(tar::EntryType::Directory);
            builder.append_data(&mut header, path, std::io::empty())?;
        } else {
            header.set_size(file.contents.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, &file.contents[..])?;
        }
    }
    builder.into_inner()
}

impl Backend for DockerBackend {
    async fn image_id(&self, tag: &str) -> Result<Option<String>, BackendError> {
        match self.docker.inspect_image(tag).await {
            Ok(image) => Ok(Some(image.id.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error("inspect image", tag, e)),
        }
    }

    async fn build_image(
        &self,
        build: &ImageBuild,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), BackendError> {
        // Build logs carry the colours of apt and npm: stripped, so messages read as text.
        let build_error = |message: String| BackendError::Build {
            tag: build.tag.clone(),
            message: strip_terminal_sequences(&message),
        };
        let mut files = vec![ContextFile::new(
            "Dockerfile",
            build.dockerfile.as_bytes(),
            0o644,
        )];
        files.extend(build.context.iter().cloned());
        let context = tar_of(&files).map_err(|e| build_error(e.to_string()))?;
        let buildargs: HashMap<String, String> = build
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels: HashMap<String, String> = build
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&build.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&buildargs)
            .labels(&labels);
        if !build.target.is_empty() {
            options = options.target(&build.target);
        }
        let mut stream = self.docker.build_image(
            options.build(),
            None,
            Some(bollard::body_full(context.into())),
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match e {
                DockerError::DockerStreamError { error } => build_error(error),
                DockerError::DockerResponseServerError { message, .. } => build_error(message),
                other => build_error(other.to_string()),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(build_error(detail.message.unwrap_or_default()));
            }
            if let Some(line) = info.stream.as_deref().or(info.status.as_deref()) {
                let line = strip_terminal_sequences(line);
                for line in line.lines().filter(|l| !l.trim().is_empty()) {
                    progress(line);
                }
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str, labels: &Labels) -> Result<String, BackendError> {
        let docker = &self.docker;
        let inspect = || {
            docker.inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
        };
        // A network of that name made by anyone else must isolate its containers too.
        let checked = |network: bollard::models::NetworkInspect| {
            let isolated = network
                .options
                .as_ref()
                .and_then(|o| o.get(ICC_OPTION))
                .is_some_and(|v| v == "false");
            if isolated {
                Ok(network.id.unwrap_or_else(|| name.to_owned()))
            } else {
                Err(BackendError::Engine {
                    action: "use network",
                    object: name.to_owned(),
                    message: format!(
                        "it exists but lets its containers reach each other ({ICC_OPTION} is not \
                         false); remove it with `docker network rm {name}` and start again"
                    ),
                })
            }
        };
        match inspect().await {
            Ok(network) => return checked(network),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine_error("inspect network", name, e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(label_map(labels)),
            options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(created) => Ok(created.id),
            // Another launcher made it between the look and the create.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => checked(
                inspect()
                    .await
                    .map_err(|e| engine_error("inspect network", name, e))?,
            ),
            Err(e) => Err(engine_error("create network", name, e)),
        }
    }

    async fn remove_network_if_unused(&self, name: &str) -> Result<bool, BackendError> {
        let network = match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(network) => network,
            Err(e) if is_not_found(&e) => return Ok(true),
            Err(e) => return Err(engine_error("inspect network", name, e)),
        };
        if network.containers.is_some_and(|c| !c.is_empty()) {
            return Ok(false);
        }
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(true),
            // A container was attached since the look ("has active endpoints").
            Err(DockerError::DockerResponseServerError {
                status_code: 403 | 409,
                ..
            }) => Ok(false),
            Err(e) => Err(engine_error("remove network", name, e)),
        }
    }

    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<String, BackendError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(label_map(labels)),
            ..Default::default()
        };
        let volume = self
            .docker
            .create_volume(request)
            .await
            .map_err(|e| engine_error("create volume", name, e))?;
        Ok(volume.name)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, BackendError> {
        let (network_mode, networking_config) = match &spec.network {
            Network::None => ("none".to_owned(), None),
            Network::Attached { network, aliases } => {
                let endpoint = EndpointSettings {
                    aliases: Some(aliases.clone()),
                    ..Default::default()
                };
                (
                    network.clone(),
                    Some(NetworkingConfig {
                        endpoints_config: Some(HashMap::from([(network.clone(), endpoint)])),
                    }),
                )
            }
        };
        let volumes = spec.volumes.iter().map(|v| Mount {
            target: Some(v.target.clone()),
            source: Some(v.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(v.read_only),
            ..Default::default()
        });
        let binds = spec.binds.iter().map(|b| Mount {
            target: Some(b.target.clone()),
            source: Some(b.source.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(b.read_only),
            ..Default::default()
        });
        let mounts = volumes.chain(binds).collect();
        let host_config = HostConfig {
            network_mode: Some(network_mode),
            mounts: Some(mounts),
            cap_drop: spec.cap_drop_all.then(|| vec!["ALL".to_owned()]),
            security_opt: spec
                .no_new_privileges
                .then(|| vec!["no-new-privileges:true".to_owned()]),
            runtime: spec.runtime.clone(),
            init: Some(spec.init),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            ..limits_config(&spec.limits)
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            labels: Some(label_map(&spec.labels)),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            entrypoint: spec.entrypoint.clone(),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            env: Some(spec.env.clone()),
            tty: Some(spec.tty),
            open_stdin: Some(spec.tty),
            attach_stdin: Some(spec.tty),
            attach_stdout: Some(spec.tty),
            attach_stderr: Some(spec.tty),
            working_dir: spec.working_dir.clone(),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| engine_error("create container", &spec.name, e))?;
        Ok(created.id)
    }

    async fn copy_into(
        &self,
        container: &str,
        dest_dir: &str,
        files: &[ContextFile],
    ) -> Result<(), BackendError> {
        let archive = tar_of(files).map_err(|e| BackendError::Engine {
            action: "pack files for",
            object: container.to_owned(),
            message: e.to_string(),
        })?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(dest_dir)
            .build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| engine_error("copy files into", format!("{container}:{dest_dir}"), e))
    }

    async fn start_container(&self, container: &str) -> Result<(), BackendError> {
        self.docker
            .start_container(container, None)
            .await
            .map_err(|e| engine_error("start container", container, e))
    }

    async fn copy_out(&self, container: &str, path: &str) -> Result<Vec<u8>, BackendError> {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| engine_error("copy files out of", format!("{container}:{path}"), e))?;
            archive.extend_from_slice(&chunk);
        }
        Ok(archive)
    }

    async fn signal(&self, container: &str, signal: &str) -> Result<(), BackendError> {
        let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(container, Some(options))
            .await
            .map_err(|e| engine_error("signal container", container, e))
    }

    async fn exec(&self, container: &str, exec: &ExecSpec) -> Result<ExecOutput, BackendError> {
        let object = || exec_label(container, exec);
        let created = self.create_exec(container, exec, true).await?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| engine_error("exec in", object(), e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| engine_error("read exec output of", object(), e))? {
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message)
                    }
                    other => stdout.extend_from_slice(other.as_ref()),
                }
            }
        }
        // The output can end a moment before the engine records the exit code.
        let mut exit_code = None;
        for _ in 0..EXEC_EXIT_POLLS {
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| engine_error("inspect exec in", object(), e))?;
            if inspect.running != Some(true) && inspect.exit_code.is_some() {
                exit_code = inspect.exit_code;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let Some(exit_code) = exit_code else {
            return Err(BackendError::Engine {
                action: "wait for exec in",
                object: object(),
                message: "its output ended but it never reported an exit code".into(),
            });
        };
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    async fn exec_detached(&self, container: &str, exec: &ExecSpec) -> Result<(), BackendError> {
        let object = || exec_label(container, exec);
        let created = self.create_exec(container, exec, false).await?;
        let options = StartExecOptions {
            detach: true,
            ..Default::default()
        };
        self.docker
            .start_exec(&created.id, Some(options))
            .await
            .map_err(|e| engine_error("exec in", object(), e))?;
        Ok(())
    }

    async fn list_objects(&self, identity: Option<&str>) -> Result<Vec<Object>, BackendError> {
        let mut label_filters = vec![format!("{}=true", wire::LABEL_MANAGED)];
        if let Some(identity) = identity {
            label_filters.push(format!("{}={identity}", wire::LABEL_IDENTITY));
        }
        let filters = HashMap::from([("label".to_owned(), label_filters)]);
        let label = |labels: &HashMap<String, String>, key: &str| {
            labels.get(key).cloned().unwrap_or_default()
        };
        let mut objects = Vec::new();

        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine_error("list", "containers", e))?;
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default();
            objects.push(Object {
                kind: ObjectKind::Container,
                id: c.id.unwrap_or_default(),
                name: name.trim_start_matches('/').to_owned(),
                identity: label(&labels, wire::LABEL_IDENTITY),
                role: label(&labels, wire::LABEL_ROLE),
                home: label(&labels, wire::LABEL_HOME),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            });
        }

        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine_error("list", "networks", e))?;
        for n in networks {
            let labels = n.labels.unwrap_or_default();
            objects.push(Object {
                kind: ObjectKind::Network,
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                identity: label(&labels, wire::LABEL_IDENTITY),
                role: label(&labels, wire::LABEL_ROLE),
                home: label(&labels, wire::LABEL_HOME),
                running: false,
            });
        }

        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine_error("list", "volumes", e))?;
        for v in volumes.volumes.unwrap_or_default() {
            objects.push(Object {
                kind: ObjectKind::Volume,
                id: v.name.clone(),
                name: v.name,
                identity: label(&v.labels, wire::LABEL_IDENTITY),
                role: label(&v.labels, wire::LABEL_ROLE),
                home: label(&v.labels, wire::LABEL_HOME),
                running: false,
            });
        }
        objects.sort();
        Ok(objects)
    }

    async fn remove(&self, kind: ObjectKind, id: &str) -> Result<(), BackendError> {
        let result = match kind {
            ObjectKind::Container => {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                self.docker.remove_container(id, Some(options)).await
            }
            ObjectKind::Network => self.docker.remove_network(id).await,
            ObjectKind::Volume => {
                self.docker
                    .remove_volume(id, None::<bollard::query_parameters::RemoveVolumeOptions>)
                    .await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error("remove", format!("{kind} {id}"), e)),
        }
    }

    async fn container_state(&self, container: &str) -> Result<ContainerState, BackendError> {
        self.state_of(container).await
    }

    async fn logs(&self, container: &str, tail: usize) -> Result<String, BackendError> {
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => out.extend_from_slice(chunk.as_ref()),
                Err(e) => return Err(engine_error("read logs of", container, e)),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn attach(&self, container: &str, io: AttachIo) -> Result<Attached, BackendError> {
        let options = bollard::query_parameters::AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(true)
            .build();
        let attached = self
            .docker
            .attach_container(container, Some(options))
            .await
            .map_err(|e| engine_error("attach to", container, e))?;
        let detached = pump(
            attached.input,
            attached.output,
            io,
            TtyOf::Container(self.docker.clone(), container.to_owned()),
        )
        .await;

        // The output ends when the container stops (its exit code is then final) or when the
        // user typed the detach keys (it keeps running).
        for _ in 0..100 {
            let state = self.state_of(container).await?;
            if let Some(code) = state.exit_code {
                return Ok(Attached::Exited(code));
            }
            if detached {
                return Ok(Attached::Detached);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(BackendError::Engine {
            action: "wait for",
            object: container.to_owned(),
            message: "the terminal closed but the container is still running".into(),
        })
    }

    async fn exec_attached(
        &self,
        container: &str,
        exec: &ExecSpec,
        tty: bool,
        io: AttachIo,
    ) -> Result<Attached, BackendError> {
        let object = || exec_label(container, exec);
        let mut options = exec_options(exec, true);
        options.attach_stdin = Some(io.stdin.is_some());
        options.tty = Some(tty);
        let created = self
            .docker
            .create_exec(container, options)
            .await
            .map_err(|e| engine_error("exec in", object(), e))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    tty,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| engine_error("exec in", object(), e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(BackendError::Engine {
                action: "exec in",
                object: object(),
                message: "the engine did not attach to it".into(),
            });
        };
        let tty_of = if tty {
            TtyOf::Exec(self.docker.clone(), created.id.clone())
        } else {
            TtyOf::None
        };
        let detached = pump(input, output, io, tty_of).await;
        // The output can end a moment before the engine records the exit code.
        for _ in 0..EXEC_EXIT_POLLS {
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| engine_error("inspect exec in", object(), e))?;
            if inspect.running != Some(true)
                && let Some(code) = inspect.exit_code
            {
                return Ok(Attached::Exited(code));
            }
            if detached {
                return Ok(Attached::Detached);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(BackendError::Engine {
            action: "wait for exec in",
            object: object(),
            message: "its output ended but it never reported an exit code".into(),
        })
    }

    async fn remove_image(&self, tag: &str) -> Result<(), BackendError> {
        let removed = self
            .docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
        match removed {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error("remove image", tag, e)),
        }
    }
}

impl DockerBackend {
    async fn create_exec(
        &self,
        container: &str,
        exec: &ExecSpec,
        attach: bool,
    ) -> Result<bollard::exec::CreateExecResults, BackendError> {
        self.docker
            .create_exec(container, exec_options(exec, attach))
            .await
            .map_err(|e| engine_error("exec in", exec_label(container, exec), e))
    }

    async fn state_of(&self, container: &str) -> Result<ContainerState, BackendError> {
        let inspect = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(|e| engine_error("inspect container", container, e))?;
        let state = inspect.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        Ok(ContainerState {
            running,
            exit_code: if running { None } else { state.exit_code },
        })
    }
}

/// Whose tty a terminal resize goes to.
enum TtyOf {
    Container(Docker, String),
    Exec(Docker, String),
    None,
}

impl TtyOf {
    async fn resize(&self, cols: u16, rows: u16) {
        match self {
            TtyOf::Container(docker, id) => {
                let options =
                    bollard::query_parameters::ResizeContainerTTYOptionsBuilder::default()
                        .w(i32::from(cols))
                        .h(i32::from(rows))
                        .build();
                let _ = docker.resize_container_tty(id, options).await;
            }
            TtyOf::Exec(docker, id) => {
                let options = bollard::query_parameters::ResizeExecOptionsBuilder::default()
                    .w(i32::from(cols))
                    .h(i32::from(rows))
                    .build();
                let _ = docker.resize_exec(id, options).await;
            }
            TtyOf::None => {}
        }
    }
}

/// Docker's default detach keys, Ctrl-P Ctrl-Q: on them the engine ends the stream and leaves
/// the process running.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Whether `typed` (following `last`, the byte typed before it) holds the detach keys.
fn holds_detach_keys(last: Option<u8>, typed: &[u8]) -> bool {
    last.into_iter()
        .chain(typed.iter().copied())
        .collect::<Vec<u8>>()
        .windows(2)
        .any(|w| w == DETACH_KEYS)
}

/// Connects a terminal to an attached stream until the output ends: keystrokes in as they
/// come (stdin's end closes the input), output (split into stdout and stderr without a tty)
/// out, resizes to `tty_of`. Returns whether the user typed the detach keys.
async fn pump(
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    mut output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<Item = Result<bollard::container::LogOutput, DockerError>>
                + Send,
        >,
    >,
    io: AttachIo,
    tty_of: TtyOf,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let AttachIo {
        stdin,
        mut stdout,
        mut stderr,
        mut resize,
    } = io;
    let detach_typed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let typed_flag = detach_typed.clone();
    let typing = tokio::spawn(async move {
        let Some(mut stdin) = stdin else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut last = None;
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let typed = &buf[..n];
            if holds_detach_keys(last, typed) {
                typed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            last = typed.last().copied();
            if input.write_all(typed).await.is_err() {
                return;
            }
            let _ = input.flush().await;
        }
        let _ = input.shutdown().await;
    });
    let resizing = tokio::spawn(async move {
        while let Some((cols, rows)) = resize.recv().await {
            tty_of.resize(cols, rows).await;
        }
    });
    while let Some(chunk) = output.next().await {
        let Ok(chunk) = chunk else { break };
        let written = match &chunk {
            bollard::container::LogOutput::StdErr { message } => {
                write_flushed(&mut stderr, message).await
            }
            // A terminal's stream: the engine injects a stray NUL byte into it (moby/moby#53701),
            // which can land inside an escape sequence or a UTF-8 character. A terminal shows
            // nothing for NUL, so dropping every NUL changes nothing else.
            bollard::container::LogOutput::Console { message } => {
                write_flushed(&mut stdout, &without_nul(message)).await
            }
            other => write_flushed(&mut stdout, other.as_ref()).await,
        };
        if written.is_err() {
            break;
        }
    }
    typing.abort();
    resizing.abort();
    detach_typed.load(std::sync::atomic::Ordering::SeqCst)
}

async fn write_flushed(
    out: &mut std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    bytes: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    out.write_all(bytes).await?;
    out.flush().await
}

/// `bytes` without its NUL bytes (borrowed when it has none, as almost every chunk has).
fn without_nul(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match bytes.contains(&0) {
        false => std::borrow::Cow::Borrowed(bytes),
        true => std::borrow::Cow::Owned(bytes.iter().copied().filter(|b| *b != 0).collect()),
    }
}

/// The part of a container's `HostConfig` that caps it.
fn limits_config(limits: &ResourceLimits) -> HostConfig {
    // Docker takes memory as an i64; a cap past i64::MAX bytes is no cap at all anyway.
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    HostConfig {
        memory: Some(memory),
        // Memory plus swap equal to memory: no swap, so a balloon hits its cap instead of
        // pushing the host into swap.
        memory_swap: Some(memory),
        pids_limit: Some(limits.pids),
        nano_cpus: Some(limits.nano_cpus),
        ..Default::default()
    }
}

/// `container: program`, naming an exec in errors.
fn exec_label(container: &str, exec: &ExecSpec) -> String {
    format!(
        "{container}: {}",
        exec.cmd.first().map_or("", String::as_str)
    )
}

fn exec_options(exec: &ExecSpec, attach: bool) -> CreateExecOptions<String> {
    CreateExecOptions {
        attach_stdout: Some(attach),
        attach_stderr: Some(attach),
        attach_stdin: Some(false),
        tty: Some(false),
        cmd: Some(exec.cmd.clone()),
        user: (!exec.user.is_empty()).then(|| exec.user.clone()),
        env: Some(exec.env.clone()),
        working_dir: exec.working_dir.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_stream_loses_its_nul_bytes_and_nothing_else() {
        assert_eq!(
            &*without_nul(b"\0\x1b[1mhi\0\xe2\x9c\x93\n"),
            b"\x1b[1mhi\xe2\x9c\x93\n"
        );
        assert!(matches!(
            without_nul(b"plain"),
            std::borrow::Cow::Borrowed(b"plain")
        ));
    }

    #[test]
    fn copied_files_keep_their_modification_time() {
        let files = [
            ContextFile::dir("src", 0o755).modified_at(1_700_000_000),
            ContextFile::new("src/a", "x", 0o644).modified_at(1_700_000_123),
            ContextFile::new("generated", "y", 0o644),
        ];
        let tar = tar_of(&files).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mtimes: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            mtimes,
            [
                ("src/".to_owned(), 1_700_000_000),
                ("src/a".to_owned(), 1_700_000_123),
                ("generated".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn the_detach_keys_are_found_within_and_across_reads() {
        assert!(holds_detach_keys(None, b"ab\x10\x11"));
        assert!(holds_detach_keys(Some(0x10), b"\x11"));
        assert!(!holds_detach_keys(Some(0x10), b"x\x11"));
        assert!(!holds_detach_keys(None, b"\x11\x10"));
        assert!(!holds_detach_keys(None, b""));
    }

    #[test]
    fn a_subnet_without_a_gateway_has_the_host_at_its_first_address() {
        assert_eq!(first_host("172.17.0.0/16"), "172.17.0.1".parse().ok());
        assert_eq!(first_host("fd00:1::/64"), "fd00:1::1".parse().ok());
        assert_eq!(first_host("not a subnet"), None);
    }

    #[test]
    fn limits_cap_memory_without_swap_pids_and_cpus() {
        let config = limits_config(&ResourceLimits {
            memory_bytes: 512 << 20,
            pids: 64,
            nano_cpus: 1_500_000_000,
        });
        assert_eq!(config.memory, Some(512 << 20));
        assert_eq!(
            config.memory_swap, config.memory,
            "no swap beyond the memory cap"
        );
        assert_eq!(config.pids_limit, Some(64));
        assert_eq!(config.nano_cpus, Some(1_500_000_000));
    }
}
