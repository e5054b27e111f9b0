//! `claude-bottle dashboard`: a ratatui TUI over the supervise queue and the running bottles.
//!
//! `app` holds the state and turns keys into actions (no IO, unit-tested), `view` draws it
//! (tested on ratatui's `TestBackend`), and this loop does the IO: it re-reads the queue and
//! asks the engine for bottles about once a second, and carries out approve / reject / edit
//! through `supervise::decide`, the same code as the `approve` and `reject` commands. An
//! unreachable engine is shown, not fatal: proposals are files and can still be rejected.

pub(crate) mod app;
pub(crate) mod view;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::backend::Backend;
use crate::backend::docker::DockerBackend;
use crate::secrets::ProcessHost;
use crate::supervise::{self, decide, queue, request};
use app::{Action, App, BottleRow};

/// How often the queue and the bottles are re-read.
const REFRESH: Duration = Duration::from_secs(1);
/// The longest one engine query may hold up the screen.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn run(root: &Path) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    anyhow::ensure!(
        std::io::stdout().is_terminal() && std::io::stdin().is_terminal(),
        "the dashboard needs a terminal; `claude-bottle dashboard --once` prints the pending proposals for scripts"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = event_loop(&mut terminal, &rt, root);
    ratatui::restore();
    rt.shutdown_background();
    result.map(|()| 0)
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    rt: &tokio::runtime::Runtime,
    root: &Path,
) -> anyhow::Result<()> {
    let root_text = root.display().to_string();
    let mut app = App::new();
    let mut engine: Option<DockerBackend> = None;
    let mut refreshed: Option<Instant> = None;
    loop {
        if refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
            refresh(&mut app, rt, &mut engine, root);
            refreshed = Some(Instant::now());
        }
        terminal.draw(|f| view::draw(f, &app, &root_text, supervise::now()))?;
        if !event::poll(Duration::from_millis(200))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let action = app.on_key(key);
        let result = match action {
            Action::Nothing => continue,
            Action::Quit => return Ok(()),
            Action::Reject(pending, reason) => decide::reject(root, &pending, &reason),
            Action::Approve(pending) => {
                app.say(true, format!("approving {}…", pending.proposal.id));
                terminal.draw(|f| view::draw(f, &app, &root_text, supervise::now()))?;
                approve(rt, &mut engine, root, &pending, None)
            }
            Action::EditThenApprove(pending) => {
                ratatui::restore();
                let edited = request::edit_in_editor(&pending.proposal);
                *terminal = ratatui::try_init().context("cannot set up the terminal again")?;
                terminal.clear()?;
                match edited {
                    Ok(edited) => {
                        app.say(
                            true,
                            format!("approving the edited {}…", pending.proposal.id),
                        );
                        terminal.draw(|f| view::draw(f, &app, &root_text, supervise::now()))?;
                        approve(rt, &mut engine, root, &pending, Some(edited))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(said) => app.say(true, said),
            Err(e) => app.say(false, format!("error: {e:#}")),
        }
        refresh(&mut app, rt, &mut engine, root);
        refreshed = Some(Instant::now());
    }
}

fn approve(
    rt: &tokio::runtime::Runtime,
    engine: &mut Option<DockerBackend>,
    root: &Path,
    pending: &queue::Pending,
    edited: Option<bottle_contract::supervise::Request>,
) -> anyhow::Result<String> {
    let prepared = decide::prepare(pending, edited, &ProcessHost)?;
    rt.block_on(async {
        let backend = match engine.take() {
            Some(b) => b,
            None => DockerBackend::connect().await?,
        };
        let result = decide::apply(&backend, root, &prepared).await;
        *engine = Some(backend);
        result
    })
}

/// Re-reads the queue and the bottles; the engine is (re)connected when needed.
fn refresh(
    app: &mut App,
    rt: &tokio::runtime::Runtime,
    engine: &mut Option<DockerBackend>,
    root: &Path,
) {
    app.set_proposals(queue::pending(root));
    app.bottles = rt.block_on(async {
        let query = async {
            let backend = match engine.take() {
                Some(b) => b,
                None => DockerBackend::connect().await.map_err(|e| e.to_string())?,
            };
            let objects = backend.list_objects(None).await.map_err(|e| e.to_string());
            *engine = Some(backend);
            objects
        };
        let objects = tokio::time::timeout(ENGINE_TIMEOUT, query)
            .await
            .map_err(|_| "the engine did not answer within 2 s".to_owned())??;
        Ok(bottle_rows(root, &objects))
    });
    if app.bottles.is_err() {
        *engine = None;
    }
}

/// One row per bottle identity of manifest home `root`.
fn bottle_rows(root: &Path, objects: &[crate::backend::Object]) -> Vec<BottleRow> {
    let home = root.display().to_string();
    let mine: Vec<_> = objects.iter().filter(|o| o.home == home).cloned().collect();
    crate::backend::Object::by_identity(&mine)
        .into_iter()
        .map(|(identity, objects)| {
            let status = crate::backend::Object::agent_status(&objects);
            BottleRow {
                agent: crate::state::load(root, &identity)
                    .map_or_else(|| "?".to_owned(), |m| m.agent),
                identity,
                status: status.to_owned(),
            }
        })
        .collect()
}
