//! Detectors for config (placeholder while being written).

use super::{FileCtx, Hit};

pub(crate) fn scan(_ctx: &FileCtx, _hits: &mut Vec<Hit>) {}
