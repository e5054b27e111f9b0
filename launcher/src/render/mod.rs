//! Renderers: the plan as text for a person, the bundle's config and secrets file (the
//! contract), and pipelock's YAML. All pure: they return documents, the caller writes them.

pub(crate) mod bundle_config;
pub(crate) mod pipelock;
pub(crate) mod plan_text;
