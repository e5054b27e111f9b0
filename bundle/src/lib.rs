//! `bottle-bundle`: the one process in a bottle's sidecar container.
//!
//! Layout, in reading order: [`config`] turns the contract's `BundleConfig` into validated
//! runtime settings (the one conversion); [`run`] starts the configured roles, each as a child
//! process under the PID-1 supervisor in [`init`]; [`scanner`] is the gitleaks-compatible
//! secret scanner the git gate and `bottle-bundle scan` call; [`gate`] serves the agent's git
//! remotes, scanning pushes before forwarding them upstream. Each role is a
//! module with a `run(config, listener, cancel)` entry and its own subcommand. [`relay`] is the
//! odd one out: it runs inside the agent container and forwards loopback ports to the bundle's
//! Unix sockets.

pub mod config;
pub mod gate;
pub mod init;
pub mod relay;
pub mod run;
pub mod scanner;
