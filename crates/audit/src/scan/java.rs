//! Detectors for java (placeholder while being written).

use super::{FileCtx, Hit};

pub(crate) fn scan(_root: tree_sitter::Node, _ctx: &FileCtx, _hits: &mut Vec<Hit>) {}
