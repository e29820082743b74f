//! Pull progress: one line per layer redrawn in place on a terminal,
//! plain log lines (start and end of each layer) otherwise.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use images::{Digest, Event, Progress};

use crate::volume::output::human_bytes;

/// State of one layer line.
struct Line {
    digest: Digest,
    text: String,
}

/// What the terminal shows.
struct Screen {
    lines: Vec<Line>,
    drawn: usize,
    last: Instant,
}

impl Screen {
    fn set(&mut self, digest: &Digest, text: String) {
        match self.lines.iter_mut().find(|l| &l.digest == digest) {
            Some(l) => l.text = text,
            None => self.lines.push(Line {
                digest: digest.clone(),
                text,
            }),
        }
    }

    fn draw(&mut self, force: bool) {
        if !force && self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for l in &self.lines {
            let _ = writeln!(err, "\x1b[2K{}: {}", l.digest.short(), l.text);
        }
        self.drawn = self.lines.len();
        let _ = err.flush();
    }
}

fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    format!(
        "[{}{}] {} / {}",
        "=".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        human_bytes(done),
        human_bytes(total)
    )
}

/// A progress sink for stderr: bars on a terminal, log lines otherwise.
pub fn for_stderr() -> Progress {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let screen = Arc::new(Mutex::new(Screen {
            lines: Vec::new(),
            drawn: 0,
            last: Instant::now(),
        }));
        Arc::new(move |e: &Event| {
            let Ok(mut s) = screen.lock() else { return };
            match e {
                Event::Resolved {
                    reference,
                    manifest,
                    layers,
                } => {
                    eprintln!("{reference}: {manifest}, {layers} layers");
                }
                Event::LayerPresent { digest } => {
                    s.set(digest, "already present".into());
                    s.draw(true);
                }
                Event::Downloading {
                    digest,
                    done,
                    total,
                } => {
                    s.set(digest, bar(*done, *total));
                    s.draw(done == total);
                }
                Event::Unpacking { digest } => {
                    s.set(digest, "unpacking".into());
                    s.draw(true);
                }
                Event::LayerDone { digest } => {
                    s.set(digest, "done".into());
                    s.draw(true);
                }
            }
        })
    } else {
        let started = Arc::new(Mutex::new(Vec::<Digest>::new()));
        Arc::new(move |e: &Event| match e {
            Event::Resolved {
                reference,
                manifest,
                layers,
            } => {
                eprintln!("{reference}: {manifest}, {layers} layers");
            }
            Event::LayerPresent { digest } => {
                eprintln!("layer {}: already present", digest.short())
            }
            Event::Downloading { digest, total, .. } => {
                let Ok(mut s) = started.lock() else { return };
                if !s.contains(digest) {
                    s.push(digest.clone());
                    eprintln!(
                        "layer {}: downloading {}",
                        digest.short(),
                        human_bytes(*total)
                    );
                }
            }
            Event::Unpacking { .. } => {}
            Event::LayerDone { digest } => eprintln!("layer {}: done", digest.short()),
        })
    }
}
