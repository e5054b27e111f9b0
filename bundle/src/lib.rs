//! `bottle-bundle`: the one process in a bottle's sidecar container.
//!
//! Layout, in reading order: [`config`] turns the contract's `BundleConfig` into validated
//! runtime settings (the one conversion); [`run`] starts the configured roles. Each role is a
//! module with a `run(config, listener, cancel)` entry and its own subcommand. [`proxy`] is the
//! egress proxy (CONNECT + TLS interception, routes, credential injection, push block).

pub mod config;
pub mod proxy;
pub mod run;
