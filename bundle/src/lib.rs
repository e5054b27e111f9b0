//! `bottle-bundle`: the one process in a bottle's sidecar container.
//!
//! Layout, in reading order: [`config`] turns the contract's `BundleConfig` into validated
//! runtime settings (the one conversion); [`run`] starts the configured roles, each as a child
//! process under the PID-1 supervisor in [`init`]. Each role is a module with its own
//! subcommand, binding and signals through the shared `role` harness: [`proxy`] is the egress proxy
//! (CONNECT + TLS interception, routes, credential injection, push block); [`gate`] serves the
//! agent's git remotes, scanning pushes with [`scanner`] (the gitleaks-compatible secret
//! scanner, also `bottle-bundle scan`) before forwarding them upstream; [`mcp`] is the supervise
//! MCP server where a stuck agent asks the operator for a host or an image change. [`relay`] is the odd
//! one out: it runs inside the agent container and forwards loopback ports to the bundle's
//! Unix sockets; [`sockets`] binds the roles' Unix sockets so the relay's uid can connect.

mod config;
pub mod gate;
mod init;
pub mod mcp;
pub mod probe;
pub mod proxy;
pub mod relay;
mod role;
pub mod run;
pub mod scanner;
mod sockets;
