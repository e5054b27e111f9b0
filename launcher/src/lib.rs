//! The `claude-bottle` launcher.
#![allow(dead_code)] // FIXME: removed once the commands use every module (next commit).
pub(crate) mod manifest;
pub(crate) mod plan;
pub(crate) mod render;
pub(crate) mod secrets;
