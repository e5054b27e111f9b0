//! Drawing the dashboard: proposals on the left, the selected one's details on the right,
//! the bottles below, then the input or status line and the keys.
//!
//! Agent-written text is escaped (`request::line`, the same `escape_controls` as
//! `dashboard --once`) before it reaches a cell: ratatui would silently drop a control
//! character, hiding from the operator that the proposal carried one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};

use super::app::{App, Mode};
use crate::supervise::request;

pub(crate) fn draw(frame: &mut Frame<'_>, app: &App, root: &str, now: u64) {
    let [title, main, bottles, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(7),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                "claude-bottle dashboard",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("  {root}")),
        ])),
        title,
    );

    let [list_area, detail_area] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(main);
    let items: Vec<ListItem<'_>> = app
        .proposals
        .iter()
        .map(|p| ListItem::new(request::headline(&p.proposal, now)))
        .collect();
    let list_title = format!(" Pending proposals ({}) ", app.proposals.len());
    if items.is_empty() {
        frame.render_widget(
            Paragraph::new("no pending proposals").block(Block::bordered().title(list_title)),
            list_area,
        );
    } else {
        let mut state = ListState::default().with_selected(Some(app.selected));
        frame.render_stateful_widget(
            List::new(items)
                .block(Block::bordered().title(list_title))
                .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
                .highlight_symbol("> "),
            list_area,
            &mut state,
        );
    }
    let detail: Vec<Line<'_>> = match app.selected() {
        Some(p) => request::detail_lines(&p.proposal)
            .into_iter()
            .map(Line::from)
            .collect(),
        None => Vec::new(),
    };
    frame.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Details ")),
        detail_area,
    );

    let bottle_lines: Vec<Line<'_>> = match &app.bottles {
        Ok(rows) if rows.is_empty() => vec![Line::from("no bottles")],
        Ok(rows) => rows
            .iter()
            .map(|b| {
                let row = format!("{:<24} {:<16} {}", b.identity, b.agent, b.status);
                Line::from(request::line(&row))
            })
            .collect(),
        Err(why) => vec![Line::styled(
            request::line(&format!("Docker is unreachable: {why}")),
            Style::default().fg(Color::Red),
        )],
    };
    frame.render_widget(
        Paragraph::new(bottle_lines).block(Block::bordered().title(" Bottles ")),
        bottles,
    );

    let status_lines: Vec<Line<'_>> = match &app.mode {
        Mode::Reason(reason) => vec![
            Line::from(format!(
                "reason for rejecting {}: {reason}_",
                app.selected()
                    .map_or_else(String::new, |p| request::line(&p.proposal.id))
            )),
            Line::from("Enter confirms, Esc cancels"),
        ],
        Mode::Browse => {
            let mut lines = Vec::new();
            if let Some(s) = &app.status {
                let color = if s.ok { Color::Green } else { Color::Red };
                // An error may quote the agent's proposal or the bottle's answer.
                lines.push(Line::styled(
                    request::line(&s.text),
                    Style::default().fg(color),
                ));
            }
            lines.extend(app.warnings.iter().map(|w| {
                Line::styled(
                    request::line(&format!("warning: {w}")),
                    Style::default().fg(Color::Yellow),
                )
            }));
            lines
        }
    };
    frame.render_widget(
        Paragraph::new(status_lines).wrap(Wrap { trim: false }),
        status,
    );
    frame.render_widget(
        Paragraph::new("up/down select   a approve   r reject   e edit then approve   q quit"),
        keys,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::app::BottleRow;
    use crate::supervise::queue;
    use crate::supervise::queue::tests::write_proposal;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
        terminal
            .draw(|f| draw(f, app, "/h/.claude-bottle", 100))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn shows_proposals_details_bottles_and_the_reason_line() {
        let root = tempfile::tempdir().unwrap();
        write_proposal(root.path(), "dev-abcde", "p-1", 40);
        let mut app = App::new();
        app.set_proposals(queue::pending(root.path()));
        app.bottles = Ok(vec![BottleRow {
            identity: "dev-abcde".into(),
            agent: "dev".into(),
            status: "running".into(),
        }]);
        let text = screen(&app);
        assert!(text.contains("> p-1  dev-abcde  egress  1m ago"), "{text}");
        assert!(text.contains("host: docs.rs"), "{text}");
        assert!(text.contains("why: need p-1"), "{text}");
        assert!(
            text.contains("dev-abcde                dev              running"),
            "{text}"
        );
        app.mode = Mode::Reason("too broad".into());
        assert!(screen(&app).contains("reason for rejecting p-1: too broad_"));
        app.bottles = Err("no socket".into());
        app.mode = Mode::Browse;
        app.say(false, "something failed");
        let text = screen(&app);
        assert!(text.contains("Docker is unreachable: no socket"), "{text}");
        assert!(text.contains("something failed"), "{text}");
    }

    #[test]
    fn agent_text_is_drawn_escaped_not_silently_dropped() {
        let root = tempfile::tempdir().unwrap();
        let mut p = write_proposal(root.path(), "dev-abcde", "p-1", 40);
        p.justification = "x\u{1b}[2K\u{202e}".into();
        let queue = queue::queues_dir(root.path()).join("dev-abcde");
        std::fs::write(
            bottle_contract::supervise::proposal_path(&queue, "p-1"),
            serde_json::to_string(&p).unwrap(),
        )
        .unwrap();
        let mut app = App::new();
        app.set_proposals(queue::pending(root.path()));
        app.say(false, "error: `a\u{1b}]52;c;eA==\u{7}`");
        let text = screen(&app);
        assert!(text.contains(r"why: x\u{1b}[2K\u{202e}"), "{text}");
        assert!(text.contains(r"error: `a\u{1b}]52;c;eA==\u{7}`"), "{text}");
    }
}
