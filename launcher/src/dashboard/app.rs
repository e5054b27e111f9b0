//! The dashboard's state and key handling, with no terminal and no IO: keys turn into
//! [`Action`]s that the loop in `mod.rs` carries out.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::supervise::queue::{Listing, Pending};

/// One running (or stopped) bottle of this manifest home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BottleRow {
    pub(crate) identity: String,
    pub(crate) agent: String,
    /// `running`, `stopped` or `missing` (the agent container's state).
    pub(crate) status: String,
}

/// Browsing, or typing a rejection reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    Browse,
    /// The reason typed so far for rejecting the selected proposal.
    Reason(String),
}

/// The outcome of the last action, shown at the bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

/// What the loop should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Nothing,
    Quit,
    Approve(Pending),
    EditThenApprove(Pending),
    Reject(Pending, String),
}

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) proposals: Vec<Pending>,
    pub(crate) warnings: Vec<String>,
    /// The bottles, or why the engine could not be asked.
    pub(crate) bottles: Result<Vec<BottleRow>, String>,
    pub(crate) selected: usize,
    pub(crate) mode: Mode,
    pub(crate) status: Option<Status>,
}

impl App {
    pub(crate) fn new() -> App {
        App {
            proposals: Vec::new(),
            warnings: Vec::new(),
            bottles: Ok(Vec::new()),
            selected: 0,
            mode: Mode::Browse,
            status: None,
        }
    }

    /// Replaces the proposals, keeping the selection on the same proposal when it is still
    /// pending (else on the same row, clamped).
    pub(crate) fn set_proposals(&mut self, listing: Listing) {
        let current = self.selected().map(|p| p.proposal.id.clone());
        self.proposals = listing.pending;
        self.warnings = listing.warnings;
        if let Some(i) =
            current.and_then(|id| self.proposals.iter().position(|p| p.proposal.id == id))
        {
            self.selected = i;
        }
        self.selected = self.selected.min(self.proposals.len().saturating_sub(1));
        if self.selected().is_none() && matches!(self.mode, Mode::Reason(_)) {
            self.mode = Mode::Browse;
        }
    }

    pub(crate) fn selected(&self) -> Option<&Pending> {
        self.proposals.get(self.selected)
    }

    pub(crate) fn say(&mut self, ok: bool, text: impl Into<String>) {
        self.status = Some(Status {
            ok,
            text: text.into(),
        });
    }

    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match &mut self.mode {
            Mode::Reason(reason) => match key.code {
                KeyCode::Esc => {
                    self.mode = Mode::Browse;
                    self.say(true, "rejection cancelled");
                    Action::Nothing
                }
                KeyCode::Enter => {
                    let reason = reason.trim().to_owned();
                    if reason.is_empty() {
                        self.say(
                            false,
                            "type a reason the agent can act on, or Esc to cancel",
                        );
                        return Action::Nothing;
                    }
                    self.mode = Mode::Browse;
                    match self.selected() {
                        Some(p) => Action::Reject(p.clone(), reason),
                        None => Action::Nothing,
                    }
                }
                KeyCode::Backspace => {
                    reason.pop();
                    Action::Nothing
                }
                KeyCode::Char(c) => {
                    reason.push(c);
                    Action::Nothing
                }
                _ => Action::Nothing,
            },
            Mode::Browse => match key.code {
                KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
                KeyCode::Up | KeyCode::Char('k') => {
                    self.selected = self.selected.saturating_sub(1);
                    Action::Nothing
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    if self.selected + 1 < self.proposals.len() {
                        self.selected += 1;
                    }
                    Action::Nothing
                }
                KeyCode::Char('a') => self.with_selected(Action::Approve),
                KeyCode::Char('e') => self.with_selected(Action::EditThenApprove),
                KeyCode::Char('r') => {
                    if self.selected().is_some() {
                        self.mode = Mode::Reason(String::new());
                    } else {
                        self.say(false, "no pending proposal to reject");
                    }
                    Action::Nothing
                }
                _ => Action::Nothing,
            },
        }
    }

    fn with_selected(&mut self, action: fn(Pending) -> Action) -> Action {
        match self.selected() {
            Some(p) => action(p.clone()),
            None => {
                self.say(false, "no pending proposal");
                Action::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::queue;
    use crate::supervise::queue::tests::write_proposal;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn app_with(root: &std::path::Path) -> App {
        let mut app = App::new();
        app.set_proposals(queue::pending(root));
        app
    }

    #[test]
    fn keys_move_approve_and_reject_with_a_reason() {
        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "a-aaaaa", "p-1", 1);
        write_proposal(root.path(), "a-aaaaa", "p-2", 2);
        let mut app = app_with(root.path());
        assert_eq!(app.on_key(key(KeyCode::Up)), Action::Nothing);
        assert_eq!(app.selected().unwrap().proposal.id, "p-1");
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected().unwrap().proposal.id, "p-2");
        assert!(
            matches!(app.on_key(key(KeyCode::Char('a'))), Action::Approve(p) if p.proposal.id == "p-2")
        );
        assert!(matches!(
            app.on_key(key(KeyCode::Char('e'))),
            Action::EditThenApprove(_)
        ));

        app.on_key(key(KeyCode::Char('r')));
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Action::Nothing,
            "empty reason"
        );
        assert!(!app.status.as_ref().unwrap().ok);
        for c in "no!x".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Backspace));
        // `q` while typing is text, not quit.
        assert_eq!(app.mode, Mode::Reason("no!".into()));
        assert!(
            matches!(app.on_key(key(KeyCode::Enter)), Action::Reject(p, r) if p.proposal.id == "p-2" && r == "no!")
        );
        assert_eq!(app.mode, Mode::Browse);

        app.on_key(key(KeyCode::Char('r')));
        app.on_key(key(KeyCode::Char('q')));
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Nothing);
        assert_eq!(app.mode, Mode::Browse);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn refresh_keeps_the_selected_proposal() {
        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "a-aaaaa", "p-2", 2);
        write_proposal(root.path(), "a-aaaaa", "p-3", 3);
        let mut app = app_with(root.path());
        app.on_key(key(KeyCode::Down));
        write_proposal(root.path(), "a-aaaaa", "p-1", 1);
        app.set_proposals(queue::pending(root.path()));
        assert_eq!(app.selected().unwrap().proposal.id, "p-3");
        app.set_proposals(Listing::default());
        assert!(app.selected().is_none());
        assert_eq!(app.on_key(key(KeyCode::Char('a'))), Action::Nothing);
    }
}
