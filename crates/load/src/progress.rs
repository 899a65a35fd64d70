//! Live progress on stderr: an indicatif line when stderr is a terminal, a plain line per
//! second otherwise (the caller chooses through [`Progress`]).
//!
//! Reads aggregated snapshots only; it must never touch the hot path or stdout.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Mode, Progress};
use crate::stats::Snapshot;

pub(crate) struct ProgressView {
    mode: Progress,
    bar: Option<ProgressBar>,
    open_loop: bool,
    duration: Duration,
}

impl ProgressView {
    pub fn new(mode: Progress, run: &Mode, duration: Duration) -> ProgressView {
        let bar = (mode == Progress::Bar).then(|| {
            let b = ProgressBar::new(duration.as_secs().max(1));
            b.set_style(
                ProgressStyle::with_template("{bar:24} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        ProgressView {
            mode,
            bar,
            open_loop: matches!(run, Mode::OpenLoop { .. }),
            duration,
        }
    }

    fn line(&self, s: &Snapshot, elapsed: Duration) -> String {
        let sched = if self.open_loop {
            format!("scheduled {}  ", s.scheduled)
        } else {
            String::new()
        };
        format!(
            "elapsed {:.0}s/{:.0}s  rate {:.0}/s  {}sent {}  completed {}  p99 so far {:.2} ms  errors {}  late {}",
            elapsed.as_secs_f64(),
            self.duration.as_secs_f64(),
            s.last_rps,
            sched,
            s.sent,
            s.completed,
            s.p99_ms,
            s.errors,
            s.late
        )
    }

    pub fn update(&mut self, s: &Snapshot, elapsed: Duration) {
        match self.mode {
            Progress::Off => {}
            Progress::Bar => {
                if let Some(b) = &self.bar {
                    b.set_position(elapsed.as_secs().min(self.duration.as_secs()));
                    b.set_message(self.line(s, elapsed));
                }
            }
            Progress::Lines => {
                if s.last_slice.is_some() {
                    eprintln!("{}", self.line(s, elapsed));
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
