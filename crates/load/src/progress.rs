//! Live progress on stderr: an indicatif line when stderr is a terminal, a plain line per
//! second otherwise (the caller chooses through [`Progress`]).
//!
//! A line is written when a time slice finishes (all threads moved past it), and it is
//! labelled with the end of that slice: `elapsed 10s` carries the counts of seconds 0-10,
//! not the wall clock at which an older slice happened to be printed (issue 10: lines
//! were a second behind).
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

    pub(crate) fn line(&self, s: &Snapshot) -> String {
        let sched = if self.open_loop {
            format!("scheduled {}  ", s.scheduled)
        } else {
            String::new()
        };
        format!(
            "elapsed {:.0}s/{:.0}s  rate {:.0}/s  {}sent {}  completed {}  p99 so far {:.2} ms  errors {}  late {}",
            s.through_s,
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

    pub fn update(&mut self, s: &Snapshot) {
        match self.mode {
            Progress::Off => {}
            Progress::Bar => {
                if let Some(b) = &self.bar {
                    b.set_position((s.through_s as u64).min(self.duration.as_secs()));
                    b.set_message(self.line(s));
                }
            }
            Progress::Lines => {
                if s.last_slice.is_some() {
                    eprintln!("{}", self.line(s));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RateProfile;

    /// The line names the second its counts run to.
    #[test]
    fn a_line_is_labelled_with_the_end_of_its_slice() {
        let mode = Mode::OpenLoop {
            profile: RateProfile::constant(1000.0, Duration::from_secs(10)).unwrap(),
        };
        let view = ProgressView::new(Progress::Off, &mode, Duration::from_secs(10));
        let s = Snapshot {
            scheduled: 10_000,
            sent: 10_000,
            completed: 10_000,
            last_slice: Some(9),
            through_s: 10.0,
            ..Snapshot::default()
        };
        let line = view.line(&s);
        assert!(
            line.starts_with("elapsed 10s/10s") && line.contains("scheduled 10000"),
            "{line}"
        );
    }
}
