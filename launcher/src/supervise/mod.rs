//! The host side of supervise: reading the proposal queue, deciding, applying what was
//! decided, and the audit log.
//!
//! The bundle's MCP server writes proposals into `<manifest home>/queue/<identity>/proposals/`;
//! only this module writes `decisions/` (mounted read-only into the bundle, not at all into the
//! agent), so an agent can never approve its own request. A decision is written only once its
//! effect took place: an approved route is live, a pipelock change is loaded, or (capability)
//! the decision tells the agent the bottle stops now.
//!
//! - `queue`: pending proposals across the manifest home's bottles, finding one by id, writing
//!   a decision.
//! - `request`: validating a request (the manifest's own value checks), the `$EDITOR` round
//!   trip, and the text shown for a proposal.
//! - `routes`: merging an approved egress route into a bottle's route list; the approved
//!   routes kept in `state/<identity>/routes.json`.
//! - `effects`: what an approval does to a running bottle, through the backend.
//! - `audit`: `<manifest home>/audit.jsonl`, one JSON line per decision with a unified diff.
//! - `decide`: approve and reject, tying the above together in the right order.

pub(crate) mod audit;
pub(crate) mod decide;
pub(crate) mod effects;
pub(crate) mod queue;
pub(crate) mod request;
pub(crate) mod routes;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
