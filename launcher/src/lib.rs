//! The `claude-bottle` launcher: reads manifests, plans a bottle, and (later) runs it on Docker.

pub mod backend;
