//! Approve and reject: the order that keeps a decision true.
//!
//! Approve ([`prepare`], then [`apply`]): validate the request (the operator's edit too), read what the host must supply
//! (the token) before touching anything, apply the effect, *then* write the decision, then the
//! audit line. A failure before the decision leaves no decision: the agent's proposal stays
//! pending and the operator can retry or reject. The one exception is a capability approval:
//! the decision ("the bottle stops now") is written first, because the effect removes the
//! bundle that would deliver it.

use std::path::Path;

use bottle_contract::supervise::{Decision, Proposal, Request, Verdict};

use super::audit;
use super::effects;
use super::queue::{self, Pending};
use super::request;
use crate::backend::Backend;
use crate::secrets::{HostEnv, Secret};

/// Rejects pending proposal `pending` with `reason` (required). Needs no container engine.
pub(crate) fn reject(root: &Path, pending: &Pending, reason: &str) -> anyhow::Result<String> {
    let reason = reason.trim();
    anyhow::ensure!(
        !reason.is_empty(),
        "a rejection needs a reason the agent can act on, e.g. `claude-bottle reject {} --reason \"use the mirror at ...\"`",
        pending.proposal.id
    );
    queue::ensure_undecided(pending)?;
    let proposal = &pending.proposal;
    let decision = Decision {
        id: proposal.id.clone(),
        verdict: Verdict::Rejected,
        decided: super::now(),
        reason: Some(reason.to_owned()),
        applied: None,
        message: format!(
            "rejected by the operator: {reason}. Do not ask again for the same thing; work around it or stop and explain."
        ),
    };
    queue::write_decision(&pending.queue, &decision)?;
    log(root, proposal, &decision, String::new())?;
    Ok(format!(
        "proposal {} ({} for bottle {}) rejected",
        proposal.id,
        request::kind(&proposal.request),
        proposal.identity
    ))
}

/// An approval checked and ready to apply: what the host must supply is already in hand.
#[derive(Debug)]
pub(crate) struct Prepared {
    pending: Pending,
    /// The request to apply (the operator's edit, or the proposal's).
    applied: Request,
    /// The token for an egress route with `auth`, from the host's environment.
    token: Option<Secret>,
    /// The edit, as a diff (empty when not edited).
    edit_diff: String,
}

/// Validates the request to apply (`edited` when the operator edited it) and reads the token
/// it needs from `host`. Touches nothing: an error here leaves no trace.
pub(crate) fn prepare<H: HostEnv>(
    pending: &Pending,
    edited: Option<Request>,
    host: &H,
) -> anyhow::Result<Prepared> {
    let proposal = &pending.proposal;
    let id = &proposal.id;
    let edit_diff = match &edited {
        Some(e) => audit::diff(
            "request",
            &request::to_editable(&proposal.request),
            &request::to_editable(e),
        ),
        None => String::new(),
    };
    let applied = edited.unwrap_or_else(|| proposal.request.clone());
    request::validate(&applied).map_err(|m| {
        anyhow::anyhow!("proposal {id} asks for something invalid: {m}; reject it with a reason, or approve it with --edit")
    })?;
    let token = match &applied {
        Request::Egress(egress) => match &egress.auth {
            Some(auth) => Some(Secret::new(
                host.var(auth.token_ref.as_str()).filter(|v| !v.is_empty()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "proposal {id} injects a token from the host variable {var}, which is not set here; set {var} in the environment that runs claude-bottle and approve again (nothing was changed)",
                        var = auth.token_ref
                    )
                })?,
            )),
            None => None,
        },
        _ => None,
    };
    Ok(Prepared {
        pending: pending.clone(),
        applied,
        token,
        edit_diff,
    })
}

/// Applies a prepared approval to its bottle, then writes the decision and the audit line.
pub(crate) async fn apply<B: Backend>(
    backend: &B,
    root: &Path,
    prepared: &Prepared,
) -> anyhow::Result<String> {
    let pending = &prepared.pending;
    queue::ensure_undecided(pending)?;
    let applied = &prepared.applied;
    let id = &pending.proposal.id;
    let identity = &pending.proposal.identity;
    let mut diff = prepared.edit_diff.clone();
    match applied {
        Request::Egress(egress) => {
            let bottle = effects::live_bottle(backend, root, identity).await?;
            let change =
                effects::apply_egress(backend, &bottle, egress, prepared.token.as_ref()).await?;
            diff.push_str(&audit::diff(
                "routes",
                &super::routes::describe(&change.before),
                &super::routes::describe(&change.after),
            ));
            diff.push_str(&change.pipelock_diff);
            let message = format!(
                "approved: https://{}/ is routed now{}; retry the request",
                egress.host,
                if egress.path_allowlist.is_empty() {
                    String::new()
                } else {
                    format!(" (paths {})", egress.path_allowlist.join(", "))
                }
            );
            decide(root, pending, applied, message, diff)?;
            super::routes::save_state(root, identity, &change.after)?;
            Ok(format!(
                "proposal {id} approved: bottle {identity} now routes {}",
                egress.host
            ))
        }
        Request::Pipelock { change } => {
            let bottle = effects::live_bottle(backend, root, identity).await?;
            diff.push_str(&effects::apply_pipelock(backend, &bottle, change).await?);
            let message =
                "approved: pipelock's configuration was changed and reloaded; retry the request"
                    .to_owned();
            decide(root, pending, applied, message, diff)?;
            crate::state::add_pipelock_change(root, identity, change)?;
            Ok(format!(
                "proposal {id} approved: pipelock of bottle {identity} reloaded"
            ))
        }
        Request::Capability { dockerfile } => {
            effects::live_bottle(backend, root, identity).await?;
            diff.push_str(&audit::diff(
                "Dockerfile",
                &current_dockerfile(root, identity),
                dockerfile,
            ));
            let message = format!(
                "approved: the bottle stops now with its work saved; the operator resumes it with `claude-bottle resume {identity}`, rebuilt from the proposed Dockerfile"
            );
            decide(root, pending, applied, message, diff)?;
            let said = crate::bottle::suspend::suspend(backend, root, identity, dockerfile)
                .await
                .map_err(|e| {
                    e.context(format!(
                        "proposal {id} is approved, but stopping bottle {identity} failed; stop it with `claude-bottle stop {identity}` if it still runs"
                    ))
                })?;
            Ok(format!("proposal {id} approved. {said}"))
        }
    }
}

/// Writes the approval and its audit line.
fn decide(
    root: &Path,
    pending: &Pending,
    applied: &Request,
    message: String,
    diff: String,
) -> anyhow::Result<()> {
    let decision = Decision {
        id: pending.proposal.id.clone(),
        verdict: Verdict::Approved,
        decided: super::now(),
        reason: None,
        applied: Some(applied.clone()),
        message,
    };
    queue::write_decision(&pending.queue, &decision)?;
    log(root, &pending.proposal, &decision, diff)
}

fn log(root: &Path, proposal: &Proposal, decision: &Decision, diff: String) -> anyhow::Result<()> {
    audit::append(
        root,
        &audit::Entry {
            time: decision.decided,
            operator: audit::operator(),
            identity: proposal.identity.clone(),
            id: proposal.id.clone(),
            kind: request::kind(&proposal.request).to_owned(),
            verdict: queue::verdict_word(decision.verdict).to_owned(),
            reason: decision.reason.clone(),
            diff,
        },
    )
}

/// The bottle's agent Dockerfile before a capability approval: the one a previous approval
/// saved in its state, else the built-in one.
fn current_dockerfile(root: &Path, identity: &str) -> String {
    std::fs::read_to_string(crate::state::dir(root, identity).join(crate::state::DOCKERFILE))
        .unwrap_or_else(|_| crate::bottle::images::AGENT_DOCKERFILE.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::queue::tests::write_proposal;

    #[test]
    fn reject_writes_the_decision_then_the_audit_line() {
        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "dev-abcde", "p-1", 1);
        let pending = queue::find(root.path(), "p-1").unwrap();
        assert!(reject(root.path(), &pending, "  ").is_err());
        assert!(queue::find(root.path(), "p-1").is_ok(), "no decision yet");
        let said = reject(root.path(), &pending, "use the mirror").unwrap();
        assert!(said.contains("p-1") && said.contains("rejected"), "{said}");
        let decision: Decision = serde_json::from_str(
            &std::fs::read_to_string(bottle_contract::supervise::decision_path(
                &pending.queue,
                "p-1",
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert_eq!(decision.reason.as_deref(), Some("use the mirror"));
        assert!(decision.message.contains("use the mirror"));
        let audit = std::fs::read_to_string(audit::path(root.path())).unwrap();
        let entry: audit::Entry = serde_json::from_str(audit.trim()).unwrap();
        assert_eq!(
            (
                entry.id.as_str(),
                entry.verdict.as_str(),
                entry.kind.as_str()
            ),
            ("p-1", "rejected", "egress")
        );
        // A stale copy (the dashboard's, read before the decision) cannot decide again.
        let err = reject(root.path(), &pending, "again")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already rejected"), "{err}");
        let audit = std::fs::read_to_string(audit::path(root.path())).unwrap();
        assert_eq!(audit.lines().count(), 1);
    }

    #[test]
    fn prepare_reads_the_token_validates_and_diffs_the_edit() {
        use crate::secrets::fake::FakeHost;
        use bottle_contract::route::{AuthScheme, RouteAuth};
        use bottle_contract::supervise::EgressRequest;

        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "dev-abcde", "p-1", 1);
        let pending = queue::find(root.path(), "p-1").unwrap();
        let with_auth = |host: &str| {
            Request::Egress(EgressRequest {
                host: host.parse().unwrap(),
                path_allowlist: vec!["/api/".parse().unwrap()],
                auth: Some(RouteAuth {
                    scheme: AuthScheme::Bearer,
                    token_ref: "DOCS_TOKEN".parse().unwrap(),
                }),
            })
        };
        // Not edited: nothing to diff, no token needed.
        let plain = prepare(&pending, None, &FakeHost::new(&[], false)).unwrap();
        assert_eq!(plain.edit_diff, "");
        assert!(plain.token.is_none());
        // An edit that adds auth needs the variable, and names it when it is unset or empty.
        for vars in [&[][..], &[("DOCS_TOKEN", "")]] {
            let err = prepare(
                &pending,
                Some(with_auth("docs.rs")),
                &FakeHost::new(vars, false),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("DOCS_TOKEN") && err.contains("nothing was changed"),
                "{err}"
            );
        }
        let host = FakeHost::new(&[("DOCS_TOKEN", "tok-value-123")], false);
        let ready = prepare(&pending, Some(with_auth("docs.rs")), &host).unwrap();
        assert_eq!(ready.token.as_ref().unwrap().expose(), "tok-value-123");
        assert!(
            ready
                .edit_diff
                .starts_with("--- request (before)\n+++ request (after)\n")
        );
        assert!(
            ready.edit_diff.contains("+    \"/api/\""),
            "{}",
            ready.edit_diff
        );
        assert!(!ready.edit_diff.contains("tok-value"));
        assert!(
            !format!("{ready:?}").contains("tok-value"),
            "Debug shows the token"
        );
        // An invalid edit is refused before anything else: here a wildcard, which a manifest
        // may hold but a proposal may not (an invalid host cannot even be a request).
        let err = prepare(&pending, Some(with_auth("*.docs.rs")), &host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wildcard"), "{err}");
    }
}
